"""The monthly bulletin (绩效通报): the month's evaluation as a printable document, HTML and PDF.

**Why HTML + PDF** (not an .xlsx workbook): an operations centre circulates its bulletin as a fixed, printable
document (it is forwarded to the district's leaders and posted as an official notice); a PDF looks the same on
every screen and printer, cannot be edited by accident and carries its fonts, so the Chinese text renders
everywhere. The HTML is the same document, for the web page (`/bulletin`) and for anyone who wants to copy a
table. The PDF is printed from the HTML by headless Chromium (the browser the test suite already installs;
`CITYOPS_CHROMIUM` names another binary), with a CJK font (Noto CJK, deploy/local/system-deps.sh).

Contents: the totals and rates of the month with the change against the previous month, the source of the
cases, the sub-district and department evaluations with scores, grades and change, the verifiers, the top
categories of events and of parts, two charts (按期结案率 by sub-district; cases filed and closed per day),
and the definitions and weights used.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pipeline.model.taxonomy import default_taxonomy
from pipeline.reports.evaluation import Period, Unit, evaluate, previous_month, region_values
from pipeline.reports.indicators import CHECKER, DEPARTMENT, INSPECTOR, PATROL, REGION, VERIFIER
from pipeline.reports.query import Filters, Queryable, as_date, problems, share
from pipeline.reports.svgcharts import bar_chart, daily_chart
from pipeline.reports.weights import Weights, load_weights

TEAM_NAMES = {"enforcement": "综合执法", "handling": "综合处置", "supervision": "综合监督",
              "command": "区城运指挥中心", "patrol": "巡查"}
SOURCE_NAMES = {"citizen": "公众举报 (12345)", "patrol": "监督员巡查上报", "sensor": "物联感知发现"}


class BulletinError(RuntimeError):
    """The PDF could not be printed (no Chromium, or it failed)."""


@dataclass
class Bulletin:
    """Everything the document shows (also what the tests check against the evaluation)."""

    since: date
    until: date
    title: str
    totals: dict[str, int | float | None]
    previous_totals: dict[str, int | float | None]
    sources: dict[str, int]
    regions: list[Unit]
    previous_regions: dict[str, Unit]
    departments: list[Unit]
    previous_departments: dict[str, Unit]
    verifiers: list[Unit]
    patrols: list[Unit]
    top_events: list[tuple[str, str, int]]
    top_parts: list[tuple[str, str, int]]
    daily: list[tuple[str, int, int]]            # day, filed, closed
    names: dict[str, str]
    weights: Weights
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    inspectors: list[Unit] = field(default_factory=list)     # patrol inspectors (有效上报率)
    checkers: list[Unit] = field(default_factory=list)       # checks before filing (按时核实率)


def area_names() -> dict[str, str]:
    """District and sub-district code -> Chinese name (the grid's areas file)."""
    import orjson

    from grid import AREAS_FILE

    doc = orjson.loads(AREAS_FILE.read_bytes())
    return {str(f["properties"]["code"]): str(f["properties"].get("name", f["properties"]["code"]))
            for f in doc["features"] if f["properties"].get("level") in ("district", "subdistrict")}


def totals_of(values: list[dict[str, int | float | None]]) -> dict[str, int | float | None]:
    """The region indicators of several regions together (counts summed, rates recomputed)."""
    s: dict[str, int] = {k: sum(int(v.get(k) or 0) for v in values)
                         for k in ("received", "filed", "due", "closed", "closed_on_time", "overdue_unclosed",
                                   "reworked")}
    pub = sum(round(float(v["public_report_rate"] or 0) * int(v["filed"] or 0)) for v in values)
    pro = sum(round(float(v["discovery_rate"] or 0) * int(v["filed"] or 0)) for v in values)
    return {**s, "close_rate": share(s["closed"], s["due"]),
            "closed_on_time_rate": share(s["closed_on_time"], s["due"]),
            "rework_rate": share(s["reworked"], s["due"]), "public_report_rate": share(pub, s["filed"]),
            "discovery_rate": share(pro, s["filed"])}


def build(db: Queryable, since: date, until: date, filters: Filters | None = None,
          weights: Weights | None = None, as_of: datetime | None = None) -> Bulletin:
    """Gather the month [since, until) and the month before it."""
    f = filters or Filters()
    w = weights or load_weights()
    before = previous_month(since)
    regions = evaluate(db, "region", f, since, until, as_of=as_of, weights=w)
    prev_regions = evaluate(db, "region", f, *before, weights=w)
    period = Period.of(since, until, as_of)
    districts = region_values(db, f, period, "district")
    prev_districts = region_values(db, f, Period.of(*before), "district")
    names = area_names()
    dnames = [names.get(d, d) for d in sorted(districts)] or ["全区"]
    title = f"{'、'.join(dnames)} 城市运行 绩效通报（{since.year}年{since.month}月）"
    cases_f = replace(problems(f), team=None, since=since, until=until)
    cond, params = cases_f.where("day", prefix="b_")
    cond += " AND status NOT IN ('checking', 'void')"    # filed only: as 立案数 (核实, docs/cases.md §2.4)
    sources = {str(r["src"]): int(r["n"]) for r in db.query_dicts(
        f"SELECT discovered_by AS src, count() AS n FROM v_cases WHERE {cond} GROUP BY src", params)}
    tax = default_taxonomy()
    cats = db.query_dicts(
        f"SELECT category AS cat, count() AS n FROM v_cases WHERE {cond} GROUP BY cat ORDER BY n DESC, cat",
        params)

    def top(prefix: str) -> list[tuple[str, str, int]]:
        out = []
        for r in cats:
            code = str(r["cat"])
            if code.startswith(prefix):
                c = tax.get(code)
                out.append((code, f"{c.major_name} · {c.name}" if c else code, int(r["n"])))
        return out[:10]

    ucond, uparams = replace(cases_f, since=None, until=None).where("day", prefix="u_")
    ucond += " AND status NOT IN ('checking', 'void')"
    uparams.update(period.params())
    daily_rows = db.query_dicts(f"""
        SELECT toString(d) AS d, sum(f) AS filed, sum(c) AS closed FROM (
            SELECT day AS d, 1 AS f, 0 AS c FROM v_cases
            WHERE {ucond} AND day >= toDate(%(p_since)s) AND day < toDate(%(p_until)s)
            UNION ALL
            SELECT toDate(assumeNotNull(closed_at), 'Asia/Shanghai') AS d, 0 AS f, 1 AS c FROM v_cases
            WHERE {ucond} AND is_closed AND ifNull(toUInt32(closed_at) >= %(p_t0)s, 0)
                AND ifNull(toUInt32(closed_at) < %(p_t1)s, 0))
        GROUP BY d ORDER BY d""", uparams)
    by_day = {as_date(r["d"]): (int(r["filed"]), int(r["closed"])) for r in daily_rows}
    daily = []
    d = since
    while d < until:
        filed, closed = by_day.get(d.isoformat(), (0, 0))
        daily.append((d.isoformat(), filed, closed))
        d += timedelta(days=1)
    positions = evaluate(db, "position", f, since, until, as_of=as_of, weights=w)
    return Bulletin(
        since, until, title, totals_of(list(districts.values())), totals_of(list(prev_districts.values())),
        sources, regions, {u.unit: u for u in prev_regions},
        evaluate(db, "department", f, since, until, as_of=as_of, weights=w),
        {u.unit: u for u in evaluate(db, "department", f, *before, weights=w)},
        [u for u in positions if u.of == "position.verifier"],
        [u for u in positions if u.of == "position.patrol" and u.values["area_filed"]],
        top("E"), top("P"), daily, names, w,
        inspectors=[u for u in positions if u.of == "position.inspector"],
        checkers=[u for u in positions if u.of == "position.checker"])


# ---- HTML ----------------------------------------------------------------------------------------------------

CSS = """
@page { size: A4; margin: 16mm 14mm 16mm 14mm; }
* { box-sizing: border-box; }
body { font-family: "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Microsoft YaHei", sans-serif;
       font-size: 10.5pt; color: #1b1b1b; margin: 0 auto; max-width: 190mm; line-height: 1.45; }
h1 { font-family: "Noto Serif CJK SC", "Noto Serif SC", serif; font-size: 20pt; text-align: center;
     color: #b00000; margin: 4mm 0 1mm; letter-spacing: 1px; }
.doc-no { text-align: center; color: #555; margin-bottom: 2mm; }
hr.red { border: 0; border-top: 2px solid #b00000; margin: 0 0 4mm; }
h2 { font-size: 13pt; margin: 6mm 0 2mm; border-left: 4px solid #b00000; padding-left: 2mm; }
table { border-collapse: collapse; width: 100%; margin: 1mm 0 3mm; page-break-inside: auto; }
tr { page-break-inside: avoid; }
th, td { border: 1px solid #999; padding: 0.8mm 1.2mm; text-align: right; white-space: nowrap; }
table.wide { font-size: 8pt; }
th { background: #f1e6e6; text-align: center; font-weight: 600; white-space: normal; }
td.l { text-align: left; }
td.g { text-align: center; font-weight: 700; }
.gA { color: #0a6b2e; } .gB { color: #2f6f9f; } .gC { color: #8a6d00; } .gD { color: #b35900; }
.gE { color: #b00000; }
.up { color: #0a6b2e; } .down { color: #b00000; }
.kpis { display: grid; grid-template-columns: repeat(4, 1fr); gap: 2mm; margin: 2mm 0 3mm; }
.kpi { border: 1px solid #ccc; border-radius: 2px; padding: 2mm; text-align: center; }
.kpi .v { font-size: 15pt; font-weight: 700; }
.kpi .n { color: #444; font-size: 9pt; }
p.lead { text-indent: 2em; margin: 1mm 0 2mm; }
.note { font-size: 8.5pt; color: #444; }
.chart { margin: 2mm 0; }
.twocol { display: grid; grid-template-columns: 1fr 1fr; gap: 4mm; }
footer { margin-top: 6mm; font-size: 8.5pt; color: #555; text-align: right; }
nav.links { margin: 3mm 0; font-size: 10pt; }
nav.links a { margin-right: 4mm; }
@media print { nav.links { display: none; } }
"""


def _pct(x: Any) -> str:
    return "—" if x is None else f"{float(x) * 100:.2f}%"


def _num(x: Any) -> str:
    return "—" if x is None else f"{int(x):,}"


def _score(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def _change_pts(now: Any, before: Any, less_is_better: bool = False) -> str:
    """The change of a rate in percentage points, coloured green when it is an improvement."""
    if now is None or before is None:
        return "—"
    d = (float(now) - float(before)) * 100
    better = -d if less_is_better else d
    cls = "up" if better > 0.005 else "down" if better < -0.005 else ""
    return f'<span class="{cls}">{d:+.2f} 个百分点</span>'


def _change_score(now: Unit | None, before: Unit | None) -> str:
    if now is None or before is None or now.score is None or before.score is None:
        return "—"
    d = now.score - before.score
    cls = "up" if d > 0.05 else "down" if d < -0.05 else ""
    return f'<span class="{cls}">{d:+.1f}</span>'


def _grade(g: str | None) -> str:
    return "—" if g is None else f'<span class="g{g}">{g}</span>'


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _kpi(name: str, value: str, note: str = "") -> str:
    return f'<div class="kpi"><div class="v">{value}</div><div class="n">{_e(name)}{note}</div></div>'


def _table(head: list[str], rows: list[list[str]], wide: bool = False) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    cls = ' class="wide"' if wide else ""
    return f"<table{cls}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _td(text: str, cls: str = "") -> str:
    return f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"


def region_table(b: Bulletin) -> str:
    head = ["街道", "受理数", "立案数", "应结案数", "结案数", "结案率", "按期结案数", "按期结案率", "超期未结案数",
            "返工率", "监督举报率", "得分", "等级", "得分较上月", "按期结案率较上月"]
    rows = []
    for u in sorted(b.regions, key=lambda u: (-(u.score or -1), u.unit)):
        v, prev = u.values, b.previous_regions.get(u.unit)
        rows.append([_td(_e(b.names.get(u.unit, u.unit)), "l"), _td(_num(v["received"])), _td(_num(v["filed"])),
                     _td(_num(v["due"])), _td(_num(v["closed"])), _td(_pct(v["close_rate"])),
                     _td(_num(v["closed_on_time"])), _td(_pct(v["closed_on_time_rate"])),
                     _td(_num(v["overdue_unclosed"])), _td(_pct(v["rework_rate"])),
                     _td(_pct(v["public_report_rate"])), _td(_score(u.score)), _td(_grade(u.grade), "g"),
                     _td(_change_score(u, prev)),
                     _td(_change_pts(v["closed_on_time_rate"], prev.values["closed_on_time_rate"] if prev else None))])
    return _table(head, rows, wide=True)


def department_table(b: Bulletin) -> str:
    head = ["部门", "派遣数", "应处置数", "处置数", "处置率", "按期处置数", "按期处置率", "超期待处置数", "返工数",
            "返工率", "延期数", "退回数", "得分", "等级", "得分较上月"]
    rows = []
    for u in sorted(b.departments, key=lambda u: (-(u.score or -1), u.unit)):
        v = u.values
        rows.append([_td(_e(TEAM_NAMES.get(u.unit, u.unit)), "l"), _td(_num(v["dispatched"])), _td(_num(v["due"])),
                     _td(_num(v["resolved"])), _td(_pct(v["resolve_rate"])), _td(_num(v["resolved_on_time"])),
                     _td(_pct(v["resolved_on_time_rate"])), _td(_num(v["overdue_open"])),
                     _td(_num(v["reworked"])), _td(_pct(v["rework_rate"])), _td(_num(v["extended"])),
                     _td(_num(v["rejected"])),
                     _td(_score(u.score)), _td(_grade(u.grade), "g"),
                     _td(_change_score(u, b.previous_departments.get(u.unit)))])
    return _table(head, rows, wide=True)


def checker_table(b: Bulletin) -> str:
    head = ["核实岗位", "应核实数", "核实数", "作废数", "按时核实数", "按时核实率", "得分", "等级"]
    rows = [[_td(_e(TEAM_NAMES.get(u.unit, u.unit)), "l")] + [_td(_num(u.values[k])) for k in CHECKER][:4]
            + [_td(_pct(u.values["check_in_time_rate"])), _td(_score(u.score)), _td(_grade(u.grade), "g")]
            for u in b.checkers]
    return _table(head, rows) if rows else ""


def verifier_table(b: Bulletin) -> str:
    head = ["核查岗位", "应核查数", "核查数", "核查率", "按时核查数", "按时核查率", "得分", "等级"]
    rows = [[_td(_e(TEAM_NAMES.get(u.unit, u.unit)), "l"), _td(_num(u.values["verify_due"])),
             _td(_num(u.values["checked"])), _td(_pct(u.values["verify_rate"])),
             _td(_num(u.values["checked_on_time"])), _td(_pct(u.values["verified_on_time_rate"])),
             _td(_score(u.score)), _td(_grade(u.grade), "g")] for u in b.verifiers]
    return _table(head, rows)


def patrol_table(b: Bulletin) -> str:
    head = ["巡查队", "辖区立案数", "巡查发现数", "公众首报数", "漏报率", "得分", "等级"]
    def name(team: str) -> str:
        parts = team.split("-")       # patrol-<sub-district>-<n>: the sub-district's n-th team
        if len(parts) == 3 and parts[1] in b.names:
            return f"{b.names[parts[1]]} 巡查{parts[2]}队"
        return team

    rows = [[_td(_e(name(u.unit)), "l"),
             _td(_num(u.values["area_filed"])), _td(_num(u.values["patrol_found"])),
             _td(_num(u.values["public_first"])), _td(_pct(u.values["miss_rate"])), _td(_score(u.score)),
             _td(_grade(u.grade), "g")] for u in sorted(b.patrols, key=lambda u: (-(u.score or -1), u.unit))]
    return _table(head, rows)


def inspector_table(b: Bulletin) -> str:
    head = ["监督员", "上报数", "有效上报数", "作废数", "重复上报", "有效上报率", "得分", "等级"]
    rows = [[_td(_e(u.unit), "l")] + [_td(_num(u.values[k])) for k in INSPECTOR][:4]
            + [_td(_pct(u.values["valid_rate"])), _td(_score(u.score)), _td(_grade(u.grade), "g")]
            for u in sorted(b.inspectors, key=lambda u: (-(u.score or -1), u.unit))]
    return _table(head, rows)


def top_table(items: list[tuple[str, str, int]], total: int) -> str:
    rows = [[_td(str(i)), _td(_e(code), "l"), _td(_e(name), "l"), _td(_num(n)), _td(_pct(share(n, total)))]
            for i, (code, name, n) in enumerate(items, 1)]
    return _table(["序号", "类别代码", "类别", "立案数", "占比"], rows)


def definitions() -> str:
    items = [f"<b>{_e(i.zh)}</b>（{_e(i.en)}）= {_e(i.formula)}" for defs in (REGION, DEPARTMENT, VERIFIER, PATROL,
                                                                                            INSPECTOR, CHECKER)
             for i in defs.values() if "/" in i.formula or i.id in ("due", "filed", "received", "verify_due")]
    return "；".join(items)


def to_html(b: Bulletin, css_href: str | None = None, nav: str = "") -> str:
    """The document; `css_href` links the style sheet instead of inlining it (the web server's CSP allows no
    inline style), `nav` is HTML put above the title (the web page's links)."""
    t, p = b.totals, b.previous_totals
    style = f'<link rel="stylesheet" href="{_e(css_href)}">' if css_href else f"<style>{CSS}</style>"
    month = f"{b.since.year}年{b.since.month}月"
    filed = int(t["filed"] or 0)
    src = "，".join(f"{SOURCE_NAMES[k]} {_num(b.sources.get(k, 0))} 件（{_pct(share(b.sources.get(k, 0), filed))}）"
                    for k in ("patrol", "sensor", "citizen"))
    w = b.weights
    weights_text = "；".join(
        f"{label}：" + "，".join(f"{ind[k].zh} {v:g}" for k, v in w.of(of).items())
        for of, label, ind in (("region", "街道", REGION), ("department", "部门", DEPARTMENT),
                               ("position.verifier", "核查岗位", VERIFIER),
                               ("position.patrol", "巡查队", PATROL), ("position.inspector", "监督员", INSPECTOR),
                               ("position.checker", "核实岗位", CHECKER))
        if of in w.evaluations)
    bands = "，".join(f"{g} ≥ {w.grades[g]:g}" for g in ("A", "B", "C", "D")) + f"，E < {w.grades['D']:g}"
    kpis = "".join([
        _kpi("受理数", _num(t["received"])), _kpi("立案数", _num(t["filed"])), _kpi("应结案数", _num(t["due"])),
        _kpi("结案数", _num(t["closed"])),
        _kpi("结案率", _pct(t["close_rate"]), f"<br>较上月 {_change_pts(t['close_rate'], p['close_rate'])}"),
        _kpi("按期结案率", _pct(t["closed_on_time_rate"]),
             f"<br>较上月 {_change_pts(t['closed_on_time_rate'], p['closed_on_time_rate'])}"),
        _kpi("超期未结案数", _num(t["overdue_unclosed"])),
        _kpi("返工率", _pct(t["rework_rate"]),
             f"<br>较上月 {_change_pts(t['rework_rate'], p['rework_rate'], less_is_better=True)}"),
    ])
    regions = sorted(b.regions, key=lambda u: (u.values["closed_on_time_rate"] or 0), reverse=True)
    chart1 = bar_chart([(b.names.get(u.unit, u.unit), u.values["closed_on_time_rate"]) for u in regions],
                       f"各街道按期结案率（{month}）")
    chart2 = daily_chart(b.daily, f"每日立案数与结案数（{month}）")
    lead = (f"{month}，共受理问题 {_num(t['received'])} 件，立案 {_num(t['filed'])} 件；应结案 {_num(t['due'])} 件，"
            f"结案 {_num(t['closed'])} 件，结案率 {_pct(t['close_rate'])}；按期结案 {_num(t['closed_on_time'])} 件，"
            f"按期结案率 {_pct(t['closed_on_time_rate'])}；超期未结案 {_num(t['overdue_unclosed'])} 件。"
            f"立案来源：{src}。")
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>{_e(b.title)}</title>{style}</head>
<body>
{nav}
<h1>{_e(b.title)}</h1>
<div class="doc-no">统计期：{b.since.isoformat()} 至 {(b.until - timedelta(days=1)).isoformat()}（北京时间）
 · 生成：{b.generated_at.astimezone(UTC).strftime('%Y-%m-%d %H:%M')} UTC</div>
<hr class="red">
<h2>一、总体情况</h2>
<p class="lead">{lead}</p>
<div class="kpis">{kpis}</div>
{chart2}
<h2>二、街道综合评价</h2>
{region_table(b)}
{chart1}
<h2>三、部门综合评价</h2>
{department_table(b)}
<h2>四、岗位评价（核查、核实、巡查、监督员）</h2>
{verifier_table(b)}
{checker_table(b)}
<p class="note">巡查队按责任网格内、巡查类别中的立案计：漏报率 = 公众首报数 / 辖区立案数。</p>
{patrol_table(b)}
<p class="note">监督员按本人巡查上报计：有效上报率 = 立案或并入案件的上报 / 上报数（同一上报重发只计一次）。</p>
{inspector_table(b)}
<h2>五、高发问题</h2>
<div class="twocol"><div><b>事件类（前 10）</b>{top_table(b.top_events, filed)}</div>
<div><b>部件类（前 10）</b>{top_table(b.top_parts, filed)}</div></div>
<h2>六、指标说明</h2>
<p class="note">{definitions()}。应结案数按结案时限（case_due_at）落在统计期内计，不论是否结案；
按期结案须处置不晚于结案时限且核查不晚于核查时限。物联设备故障为运维工作，不计入评价。</p>
<p class="note">评分权重（本地设定，参照 GB/T 30428.4 的指标结构，非标准原文）：{_e(weights_text)}。
等级：{_e(bands)}。比率指标得分 = 100 × 比率（返工率、监督举报率为 100 × (1 − 比率)），
数量指标得分 = 100 × 数量 / 同批最大值。</p>
<footer>cityops · 城市运行管理 综合评价</footer>
</body></html>
"""
