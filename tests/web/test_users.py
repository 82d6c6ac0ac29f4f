"""The users file: hashes only, clear errors naming file, line and key."""

from __future__ import annotations

import pytest

from pipeline.web.users import (
    UsersError,
    api_key_digest,
    dump_users,
    hash_password,
    parse_users,
    verify_password,
)
from tests.web.helpers import PASSWORD, users


def test_password_hash_verifies_only_the_same_password() -> None:
    """A scrypt hash accepts its password and refuses any other; two hashes of one password differ (salt)."""
    h = hash_password("s3cret-pass")
    assert verify_password("s3cret-pass", h)
    assert not verify_password("s3cret-pasS", h)
    assert h != hash_password("s3cret-pass")
    assert not verify_password("x", "not-a-hash")


def test_round_trip_keeps_every_user() -> None:
    """dump_users then parse_users gives the same users back."""
    original = users()
    again = parse_users(dump_users(original), "round-trip")
    assert again.users == original.users


def test_authenticate_and_api_keys() -> None:
    """Password users sign in; ingest clients are found by key, never by password."""
    u = users()
    assert u.authenticate("ops", PASSWORD) is not None
    assert u.authenticate("ops", "wrong") is None
    assert u.authenticate("nobody", PASSWORD) is None
    assert u.authenticate("gateway", PASSWORD) is None
    client = u.by_api_key("test-ingest-key-0123456789")
    assert client is not None and client.name == "gateway"
    assert u.by_api_key("other") is None


GOOD_HASH = hash_password("whatever1")


@pytest.mark.parametrize(("body", "line", "needle"), [
    ("users:\n  - name: a\n    role: boss\n    password: 'HASH'\n", 2, "key 'role'"),
    ("users:\n  - name: a\n    role: member\n    password: 'HASH'\n", 2, "missing key 'team'"),
    ("users:\n  - name: a\n    role: member\n    team: police\n    password: 'HASH'\n", 2, "key 'team'"),
    ("users:\n  - name: a\n    role: operator\n    password: hunter2\n", 2, "clear-text"),
    ("users:\n  - name: a\n    role: operator\n    password: 'HASH'\n    colour: red\n", 2, "unknown key 'colour'"),
    ("users:\n  - name: a\n    role: operator\n    password: 'HASH'\n  - name: a\n    role: analyst\n"
     "    password: 'HASH'\n", 5, "duplicate user"),
    ("users:\n  - name: g\n    role: ingest\n    api_key_sha256: abc\n", 2, "api_key_sha256"),
])
def test_bad_entries_name_file_line_and_key(body: str, line: int, needle: str) -> None:
    """Each broken entry is refused with the file, the entry's line and the offending key."""
    text = "version: 1\nkind: cityops-users\n" + body.replace("HASH", GOOD_HASH)
    with pytest.raises(UsersError) as err:
        parse_users(text, "users.yaml")
    assert f"users.yaml:{line + 2}:" in str(err.value)
    assert needle in str(err.value)


def test_header_and_yaml_errors() -> None:
    """A wrong kind and broken YAML are refused with the file name."""
    with pytest.raises(UsersError, match="users.yaml:1: key 'kind'"):
        parse_users("version: 1\nkind: other\nusers: []\n", "users.yaml")
    with pytest.raises(UsersError, match=r"users.yaml:\d+: not valid YAML"):
        parse_users("version: 1\nusers: [\n", "users.yaml")


def test_api_key_digest_is_sha256_hex() -> None:
    import hashlib

    assert api_key_digest("k") == hashlib.sha256(b"k").hexdigest()
