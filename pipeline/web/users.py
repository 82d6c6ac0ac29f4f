"""The users file: who may sign in, with which role and team, and which ingest clients hold API keys.

Format (YAML, path from CITYOPS_USERS; deploy/local/users.example.yaml is an example):

    version: 1
    kind: cityops-users
    users:
      - name: ops-li            # sign-in name, unique
        role: operator          # operator | member | patrol | analyst | ingest
        password: "scrypt$16384$8$1$<salt hex>$<hash hex>"
      - name: handling-wu
        role: member
        team: handling          # member: the dispatch team (enforcement | handling | supervision)
        patrol_team: patrol-ouyang   # optional: may also file patrol reports for this patrol team
        password: "..."
      - name: hotline-gateway
        role: ingest
        api_key_sha256: "<hex>"  # SHA-256 of the Open311 api_key; the key itself is never stored

Passwords are stored as scrypt hashes only. A file with an unknown key, a bad role, a member without a team or
a duplicate name is refused with `UsersError` naming the file, line and key; a running server keeps the users
it has (see `UsersHolder`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.model.events import TEAMS
from pipeline.model.watched import WatchedFile
from pipeline.model.yamlfile import load_with_lines

Role = Literal["operator", "member", "patrol", "analyst", "ingest"]
ROLES: tuple[Role, ...] = ("operator", "member", "patrol", "analyst", "ingest")
USERS_KIND = "cityops-users"

# scrypt cost: n=2^14, r=8, p=1 takes ~50 ms and 16 MiB, the usual interactive-login setting.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 16384, 8, 1
_USER_KEYS = {"name", "role", "team", "patrol_team", "password", "api_key_sha256", "display"}


class UsersError(ValueError):
    """A users file that cannot be used; the message names the file, line and key."""


@dataclass(frozen=True, slots=True)
class User:
    """One entry of the users file. `team` is set for members; `patrol_team` for those who file patrol reports."""

    name: str
    role: Role
    team: str | None = None
    patrol_team: str | None = None
    password_hash: str | None = None
    api_key_sha256: str | None = None
    display: str = ""

    @property
    def can_patrol(self) -> bool:
        return self.patrol_team is not None and self.role in ("member", "patrol")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$<salt hex>$<hash hex>` for a password (a fresh random salt unless given)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches a `hash_password` result (constant-time compare; False if malformed)."""
    try:
        scheme, n, r, p, salt_hex, hash_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p),
                                dklen=len(hash_hex) // 2, maxmem=256 * 1024 * 1024)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest.hex(), hash_hex)


def api_key_digest(api_key: str) -> str:
    """What the users file stores for an ingest client's API key (keys are long random strings, so a plain
    SHA-256 is enough: there is nothing to brute-force)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class Users:
    """The parsed users file."""

    users: dict[str, User]
    source: str = ""

    def get(self, name: str) -> User | None:
        return self.users.get(name)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when name and password match and the role signs in with a password; else None."""
        user = self.users.get(name)
        if user is None or user.password_hash is None:
            # hash anyway, so a wrong name costs as long as a wrong password (no user enumeration by timing)
            verify_password(password, hash_password("x", b"0" * 16))
            return None
        return user if verify_password(password, user.password_hash) else None

    def by_api_key(self, api_key: str) -> User | None:
        digest = api_key_digest(api_key)
        for user in self.users.values():
            if user.role == "ingest" and user.api_key_sha256 and hmac.compare_digest(user.api_key_sha256, digest):
                return user
        return None


# -- reading -------------------------------------------------------------------------------------------

def parse_users(text: str, source: str) -> Users:
    """Parse a users file's text; raises UsersError naming `source`, the line and the key."""
    doc = load_with_lines(text, source, UsersError, what="not valid YAML")
    if not isinstance(doc, dict):
        raise UsersError(f"{source}: expected a mapping with version, kind and users")
    top = {k for k in doc if k != "__line__"}
    for key in sorted(top - {"version", "kind", "users"}):
        raise UsersError(f"{source}:{doc['__line__']}: unknown key {key!r}")
    if doc.get("version") != 1:
        raise UsersError(f"{source}:{doc['__line__']}: key 'version' must be 1, got {doc.get('version')!r}")
    if doc.get("kind") != USERS_KIND:
        raise UsersError(f"{source}:{doc['__line__']}: key 'kind' must be {USERS_KIND!r}")
    entries = doc.get("users")
    if not isinstance(entries, list):
        raise UsersError(f"{source}:{doc['__line__']}: key 'users' must be a list")
    users: dict[str, User] = {}
    for entry in entries:
        user = _user(entry, source)
        if user.name in users:
            raise UsersError(f"{source}:{entry['__line__']}: key 'name': duplicate user {user.name!r}")
        users[user.name] = user
    return Users(users, source)


def _user(entry: Any, source: str) -> User:
    if not isinstance(entry, dict):
        raise UsersError(f"{source}: each entry of 'users' must be a mapping, got {entry!r}")
    where = f"{source}:{entry['__line__']}"
    for key in sorted(set(entry) - _USER_KEYS - {"__line__"}):
        raise UsersError(f"{where}: unknown key {key!r}")

    def text(key: str, required: bool = False) -> str | None:
        value = entry.get(key)
        if value is None:
            if required:
                raise UsersError(f"{where}: missing key {key!r}")
            return None
        if not isinstance(value, str) or not value.strip():
            raise UsersError(f"{where}: key {key!r} must be a non-empty string")
        return value.strip()

    name = text("name", required=True)
    role = text("role", required=True)
    assert name is not None and role is not None
    if role not in ROLES:
        raise UsersError(f"{where}: key 'role': {role!r} is not one of {', '.join(ROLES)}")
    team = text("team")
    if role == "member" and team is None:
        raise UsersError(f"{where}: missing key 'team' (a member belongs to {', '.join(TEAMS)})")
    if team is not None and team not in TEAMS:
        raise UsersError(f"{where}: key 'team': {team!r} is not one of {', '.join(TEAMS)}")
    if team is not None and role != "member":
        raise UsersError(f"{where}: key 'team': only members have a team (role is {role})")
    patrol_team = text("patrol_team")
    if role == "patrol" and patrol_team is None:
        raise UsersError(f"{where}: missing key 'patrol_team' (role patrol)")
    password = text("password")
    api_key = text("api_key_sha256")
    if role == "ingest":
        if api_key is None:
            raise UsersError(f"{where}: missing key 'api_key_sha256' (role ingest)")
        if len(api_key) != 64 or any(c not in "0123456789abcdef" for c in api_key):
            raise UsersError(f"{where}: key 'api_key_sha256' must be 64 lowercase hex digits")
    elif password is None:
        raise UsersError(f"{where}: missing key 'password' (a scrypt hash; `cityops web adduser` makes one)")
    if password is not None and not password.startswith("scrypt$"):
        raise UsersError(f"{where}: key 'password' must be a scrypt hash, never a clear-text password")
    return User(name=name, role=role, team=team, patrol_team=patrol_team,
                password_hash=password, api_key_sha256=api_key, display=text("display") or "")


def load_users(path: Path) -> Users:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UsersError(f"{path}: cannot read: {err.strerror}") from None
    return parse_users(text, str(path))


def dump_users(users: Users) -> str:
    """The users file text for `users` (used by `adduser` and the development demo file)."""
    entries = []
    for u in users.users.values():
        e: dict[str, str] = {"name": u.name, "role": u.role}
        for key, value in (("team", u.team), ("patrol_team", u.patrol_team), ("display", u.display or None),
                           ("password", u.password_hash), ("api_key_sha256", u.api_key_sha256)):
            if value:
                e[key] = value
        entries.append(e)
    body = yaml.safe_dump({"version": 1, "kind": USERS_KIND, "users": entries}, allow_unicode=True,
                          sort_keys=False)
    return "# cityops users: scrypt password hashes and API-key digests only (cityops web adduser)\n" + body


def write_users(path: Path, users: Users) -> None:
    """Write atomically with mode 0600 (the file holds password hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(dump_users(users))
    os.replace(tmp, path)


class UsersHolder(WatchedFile[Users]):
    """The users a running server knows, re-read when the file changes; a bad new file is refused (the
    previous users stay and `last_error` says why). See pipeline.model.watched."""

    label = "users"
    refused = (UsersError,)

    def load(self) -> Users:
        return load_users(self.file())
