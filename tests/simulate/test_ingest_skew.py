"""Two ingest processes an hour and four hours apart in event time: as the items come, cases differ from one
process taking everything (README "Two ingest processes are not level in event time"); in the order of the
ingest group's progress marks (pipeline.stages.order), none does."""

from tests.simulate.ingest_skew import replay


def test_the_marks_order_makes_two_skewed_ingest_processes_one() -> None:
    got = replay(11, lags=(60, 240))
    assert got[60][0] > 0 and got[240][0] > 0, got        # the skew matters as the items come
    assert got[60][1] == 0 and got[240][1] == 0, got      # and not at all in the marks' order
