"""The worker's garbage-collector settings (pipeline.runtime.worker.tune_gc): less frequent, never switched off."""

import subprocess
import sys
import textwrap

from tests.support import ROOT

PROBE = textwrap.dedent("""
    import gc, weakref
    from pipeline.runtime.worker import GC_THRESHOLDS, tune_gc

    loaded = [[i] for i in range(1000)]          # stands for the grid, rules and registry loaded at start
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold()
    assert gc.get_freeze_count() >= 1000, gc.get_freeze_count()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a                       # a reference cycle: only the collector can free it
    gone = weakref.ref(a)
    del a, b
    live = []
    for i in range(3 * GC_THRESHOLDS[0]):         # ordinary work allocates; no explicit gc.collect()
        live.append([i])
        if gone() is None:
            break
    print("collected" if gone() is None else "leaked", len(live))
""")


def test_tune_gc_freezes_what_is_loaded_and_still_collects_cycles() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    verdict, allocations = out.stdout.split()
    assert verdict == "collected"
    # not at once (default thresholds would collect within ~700 allocations), but within one young threshold
    assert 1_000 < int(allocations) <= 50_000 + 100
