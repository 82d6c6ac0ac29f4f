"""The bench's result as a table, and the targets it is judged by (issue #9's, as issue #23 tightened them)."""

from __future__ import annotations

from typing import Any

from pipeline.bench import web as web_phase
from pipeline.bench.harness import (
    TARGET_EVENTS_PER_S,
    TARGET_MEMORY_MIB,
    TARGET_P99_MS,
    TARGET_P99_SHARE,
    TARGET_RATIO,
)
from pipeline.bench.notify import TARGET_P99_MS as NOTIFY_P99_MS
from pipeline.bench.recovery import TARGET_RECOVERY_S


def _num(v: float | None, fmt: str = ",.0f") -> str:
    return "-" if v is None or v != v else format(v, fmt)


def render(result: dict[str, Any]) -> str:
    """The tables printed at the end (and easy to paste into an issue)."""
    lines: list[str] = []
    m = result["machine"]
    lines.append(f"cityops bench {result['stamp']}: {m.get('cpu', '?')}, {m['cores']} cores, "
                 f"{m.get('memory_gib', '?')} GiB, load {m['loadavg_start'][0]:.1f} at start; Kafka {m['kafka']}, "
                 f"ClickHouse {m['clickhouse']}, Python {m['python']}")
    inp = result["input"]
    lines.append(f"input: {inp['messages']:,} messages ({', '.join(f'{k} {v:,}' for k, v in inp['topics'].items())}); "
                 f"{inp['expected']['cases']:,} cases, {inp['expected']['located']:,} located items")
    lines.append("")
    lines.append(f"{'stage (in process, same input)':<46}{'unit':>6}{'items':>10}{'per s':>12}{'naive/s':>11}"
                 f"{'ratio':>8}")
    for st in result["stages"]:
        ratio = st["rate"] / st["naive_rate"] if st.get("naive_rate") else None
        lines.append(f"{st['stage'] + ('' if st['clock'] == 'cpu' else ' [wall]'):<46}{st['unit']:>6}"
                     f"{st['items']:>10,}{_num(st['rate']):>12}{_num(st.get('naive_rate')):>11}"
                     f"{_num(ratio, '.1f') + 'x' if ratio else '-':>8}")
    lines.append("")
    lines.append(f"{'end to end (broker + server on this machine)':<46}{'events/s':>10}{'seconds':>9}{'vs naive':>10}"
                 f"{'CPU us/msg':>11}{'peak RSS MiB':>14}  done")
    naive = result.get("naive")
    annotate(result)
    for run in result["throughput"]:
        ratio = run.get("vs_naive")
        mem = "+".join(_num(x) for x in run["peak_rss_mib"])
        done = "yes" if run["finished"] and run.get("complete", True) else f"NO ({run['processed']:,} done)"
        lines.append(f"{run['label']:<46}{_num(run['events_per_s']):>10}{run['seconds']:>9.1f}"
                     f"{(_num(ratio, '.1f') + 'x') if ratio else '-':>10}"
                     f"{_num(run.get('cpu_us_per_message'), '.1f'):>11}{mem:>14}  {done}")
    if naive:
        lines.append(f"{'naive baseline (pipeline.bench.naive)':<46}{_num(naive['events_per_s']):>10}"
                     f"{naive['seconds']:>9.1f}{'1.0x':>10}{_num(naive.get('cpu_us_per_message'), '.1f'):>11}"
                     f"{'(in bench)':>14}  "
                     f"{'yes' if naive['finished'] else 'NO (' + format(naive['messages'], ',') + ' done)'}")
    rec = result.get("recovery")
    if rec:
        lines.append("")
        lines.append(f"{'recovery after SIGKILL (month of state)':<46}{'new msgs':>10}{'first out s':>13}"
                     f"{'lag 0 s':>10}{'peak RSS MiB':>14}")
        lines.append(f"{'restarted worker':<46}{rec['tail_messages']:>10,}{_num(rec['first_output_s'], '.1f'):>13}"
                     f"{_num(rec['recovery_s'], '.1f'):>10}{'+'.join(_num(x) for x in rec['peak_rss_mib']):>14}")
    lat = result.get("latency")
    if lat:
        lines.append("")
        lines.append(f"{'produce -> assignment latency':<46}{'cases':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
        for name, label in (("paced", f"offered {lat['paced_rate']:,.0f} events/s"),
                            ("max", f"offered at full speed ({lat['max_offered_rate']:,.0f} events/s)")):
            r = lat[name]
            lines.append(f"{label:<46}{r['n']:>8,}{_num(r['p50_ms']):>10}{_num(r['p99_ms']):>10}"
                         f"{_num(r['max_ms']):>10}")
            for part, text in (("to_send", "  of which until the worker sent it"),
                               ("send_to_arrival", "  of which from its send to the consumer")):
                q = r.get(part)
                if q:
                    lines.append(f"{text:<46}{q['n']:>8,}{_num(q['p50_ms']):>10}{_num(q['p99_ms']):>10}"
                                 f"{_num(q['max_ms']):>10}")
    nt = result.get("notify")
    if nt:
        lines.append("")
        lines.append(f"{'assignment -> delivery (notifications, P1)':<46}{'sent':>8}{'p50 ms':>10}{'p99 ms':>10}"
                     f"{'max ms':>10}")
        lines.append(f"{'offered ' + format(nt.get('paced_rate', 0), ',.0f') + ' events/s':<46}{nt['n']:>8,}"
                     f"{_num(nt['p50_ms']):>10}{_num(nt['p99_ms']):>10}{_num(nt['max_ms']):>10}")
    if result.get("web"):
        lines += web_phase.report_lines(result["web"])
    lines.append("")
    lines += [f"target: {t['what']}: {t['measured']} -> {_verdict(t['met'])}" for t in result["targets"]]
    return "\n".join(lines)


def _verdict(met: bool | None) -> str:
    return "(figure, no same-run target)" if met is None else "met" if met else "NOT met"


def annotate(result: dict[str, Any]) -> None:
    """Each throughput run's rate over the naive baseline's of the same run (`vs_naive`), once it ran."""
    naive = result.get("naive")
    for run in result.get("throughput", []):
        if naive and naive.get("events_per_s"):
            run["vs_naive"] = run["events_per_s"] / naive["events_per_s"]


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against this run's figures."""
    out: list[dict[str, Any]] = []
    for one in (run for run in result["throughput"] if run["workers"] == 1):   # each layout of one worker
        layout = "one process" if one.get("stages", ["all"]) == ["all"] else "ingest + cases processes"
        eps = one["events_per_s"]
        out.append({"what": f"one worker ({layout}) >= {TARGET_EVENTS_PER_S:,} events/s end to end",
                    "measured": f"{eps:,.0f} events/s", "met": eps >= TARGET_EVENTS_PER_S})
        naive = result.get("naive")
        if naive:
            ratio = eps / naive["events_per_s"]
            out.append({"what": f"one worker ({layout}) >= {TARGET_RATIO:.0f}x the naive baseline end to end",
                        "measured": f"{ratio:.1f}x ({eps:,.0f} vs {naive['events_per_s']:,.0f} events/s)",
                        "met": ratio >= TARGET_RATIO})
        cpu = one.get("cpu_us_per_message")
        if cpu is not None:
            ncpu = naive.get("cpu_us_per_message") if naive else None
            vs = f" (naive {ncpu:.1f} us, {ncpu / cpu:.1f}x more)" if ncpu and cpu == cpu and cpu > 0 else ""
            out.append({"what": f"worker CPU per message ({layout}; issue #23: half of round 1's on this machine)",
                        "measured": f"{cpu:.1f} us{vs}", "met": None})
    sink = result.get("sink")
    if sink:
        from pipeline.bench.sink import TARGET_ROWS_PER_S

        rate = sink["events_columns_http"]
        out.append({"what": f"the sink stores >= {TARGET_ROWS_PER_S:,} rows/s from one process (events rows, "
                            "column builders over HTTP)",
                    "measured": f"{rate:,.0f} rows/s (sensor minutes {sink['readings_columns_http']:,.0f})",
                    "met": rate >= TARGET_ROWS_PER_S})
    lat = result.get("latency")
    if lat:
        p99, full = lat["paced"]["p99_ms"], lat["max"]["p99_ms"]
        share = p99 / full if full == full and full > 0 else float("nan")
        out.append({"what": f"p99 produce-to-assignment < {TARGET_P99_MS:.0f} ms at {lat['rate']:,.0f} events/s "
                            f"and <= {TARGET_P99_SHARE:.0%} of the full-speed p99",
                    "measured": f"{p99:,.0f} ms over {lat['paced']['n']} cases, {_num(share * 100)} % of "
                                f"{_num(full)} ms",
                    "met": p99 == p99 and p99 < TARGET_P99_MS and share == share and share <= TARGET_P99_SHARE})
    nt = result.get("notify")
    if nt:

        p99 = nt["p99_ms"]
        out.append({"what": f"p99 assignment-to-delivery of priority-1 notifications < {NOTIFY_P99_MS:.0f} ms at "
                            f"{nt['rate']:,.0f} events/s",
                    "measured": f"{p99:,.0f} ms over {nt['n']} deliveries (p50 {nt['p50_ms']:,.0f} ms)",
                    "met": p99 == p99 and p99 < NOTIFY_P99_MS})
    if result.get("web"):
        out.append(web_phase.target(result["web"]))
    rec = result.get("recovery")
    if rec:
        secs = rec["recovery_s"]
        out.append({"what": f"current again <= {TARGET_RECOVERY_S:.0f} s after a SIGKILL with a month of state",
                    "measured": (f"lag zero {secs:.1f} s after the restart, first output at "
                                 f"{_num(rec['first_output_s'], '.1f')} s" if secs is not None
                                 else "lag not zero within the phase's time"),
                    "met": secs is not None and secs <= TARGET_RECOVERY_S})
    month = result.get("month")
    if month:
        mem = max(month["peak_rss_mib"])
        sensors = f", {month['sensors']:,} sensors" if "sensors" in month else ""
        messages = f"{month['messages']:,} messages, " if "messages" in month else ""
        out.append({"what": f"worker memory < {TARGET_MEMORY_MIB:.0f} MiB with a month of state "
                            f"({month['days']:g} of the target's 30 simulated days{sensors})",
                    "measured": f"{mem:,.0f} MiB peak after {month['days']:g} days: {messages}"
                                f"{month['stored']['cases']:,} cases{sensors}"
                                + ("" if month.get("finished", True) else " (cut by the timeout)"),
                    "met": mem == mem and mem < TARGET_MEMORY_MIB and month.get("finished", True)})
    return out
