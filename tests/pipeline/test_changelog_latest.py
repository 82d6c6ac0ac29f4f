"""A restore decodes only each key's last version (pipeline.runtime.changelog.Latest): the table ends exactly as
replaying the changelog records one by one leaves it (keys, values, key order), in one go or in batches."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.runtime.changelog import ChangelogTable, Latest

Record = tuple[bytes, bytes | None]
records = st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d", b"e"]),
                             st.one_of(st.none(), st.binary(min_size=1, max_size=3))), max_size=40)


def replayed(before: dict[str, bytes], recs: list[Record]) -> list[tuple[str, bytes]]:
    """The definition: each record applied in turn to a plain dict."""
    out = dict(before)
    for k, v in recs:
        if v is None:
            out.pop(k.decode(), None)
        else:
            out[k.decode()] = v
    return list(out.items())


@given(st.dictionaries(st.sampled_from(["a", "c", "x"]), st.binary(min_size=1, max_size=2)), records,
       st.integers(min_value=1, max_value=7))
def test_latest_leaves_the_table_as_a_replay_does(before: dict[str, bytes], recs: list[Record], size: int) -> None:
    decoded: list[bytes] = []

    def decode(b: bytes) -> bytes:
        decoded.append(b)
        return b

    table: ChangelogTable[bytes] = ChangelogTable("t", bytes, decode)
    table.data[0] = dict(before)
    latest = Latest()
    for i in range(0, len(recs), size):      # as a restore's fetches bring them
        latest.add(recs[i:i + size])
    latest.apply(table, 0)
    assert list(table.data[0].items()) == replayed(before, recs)
    last = dict(recs)                         # each key's last record
    assert sorted(decoded) == sorted(v for v in last.values() if v is not None)   # decoded once, the last one
    assert latest.records == len(recs)


def test_each_key_is_decoded_once_however_many_versions_it_has() -> None:
    decoded: list[bytes] = []
    table: ChangelogTable[int] = ChangelogTable("t", lambda v: str(v).encode(),
                                                lambda b: decoded.append(b) or int(b))
    table.load(3, [(b"s1", b"1"), (b"s2", b"5"), (b"s1", b"2"), (b"s2", None), (b"s1", b"3"), (b"s2", b"7")])
    assert table.data[3] == {"s1": 3, "s2": 7} and sorted(decoded) == [b"3", b"7"]
    assert list(table.data[3]) == ["s1", "s2"]
