"""The server secret, signed session tokens, CSRF tokens and who may do what.

A session token is `<payload>.<signature>`: the payload is base64url JSON `{"u": name, "exp": epoch, "n":
nonce}`, the signature HMAC-SHA256 over it with the server secret. The same token works as the `cityops_session`
cookie (HttpOnly, SameSite=Strict) for browsers and as `Authorization: Bearer <token>` for apps. The role and
team are *not* trusted from the token: each request looks the user up in the current users file, so removing a
user or changing their team takes effect at once. Signing out revokes the token's nonce.

CSRF: every state-changing request authenticated by the cookie must carry the CSRF token of its session (header
`X-CSRF-Token` or form field `csrf_token`), an HMAC of the session nonce; a request with a Bearer token needs
none (a browser never attaches that header on its own).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson

from pipeline.web.users import User

DEV_SECRET = "cityops-dev-secret-do-not-use-in-production"
MIN_SECRET_LEN = 32
SESSION_TTL_S = 12 * 3600
COOKIE = "cityops_session"


class SecretError(RuntimeError):
    """The server must not start with this secret (production mode without a real one)."""


def production_mode(env: dict[str, str]) -> bool:
    return env.get("CITYOPS_ENV", "development") == "production"


def server_secret(env: dict[str, str]) -> bytes:
    """CITYOPS_SECRET of `env` (see `secret_of`)."""
    return secret_of(env.get("CITYOPS_SECRET", ""), production_mode(env))


def secret_of(secret: str, production: bool) -> bytes:
    """The server's secret (`Settings.web_secret`); in development a fixed dev secret when unset. Production
    refuses a missing, short or development secret."""
    if production:
        if not secret:
            raise SecretError("CITYOPS_SECRET must be set in production mode (CITYOPS_ENV=production)")
        if secret == DEV_SECRET:
            raise SecretError("CITYOPS_SECRET is the development default; set a secret of your own")
        if len(secret) < MIN_SECRET_LEN:
            raise SecretError(f"CITYOPS_SECRET is too short ({len(secret)} characters, at least {MIN_SECRET_LEN})")
    return (secret or DEV_SECRET).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    """A verified token: who, until when, and its nonce (for CSRF and revocation)."""

    user: str
    expires: float
    nonce: str


class Signer:
    """Issues and verifies session tokens and CSRF tokens with one secret."""

    def __init__(self, secret: bytes, ttl_s: float = SESSION_TTL_S) -> None:
        self._key = hashlib.sha256(b"cityops-session:" + secret).digest()
        self._csrf_key = hashlib.sha256(b"cityops-csrf:" + secret).digest()
        self.ttl_s = ttl_s
        self._revoked: dict[str, float] = {}

    def issue(self, user: User, now: float | None = None) -> str:
        now = time.time() if now is None else now
        payload = _b64(orjson.dumps({"u": user.name, "exp": int(now + self.ttl_s), "n": secrets.token_hex(12)}))
        return f"{payload}.{self._sign(payload)}"

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def verify(self, token: str, now: float | None = None) -> Session | None:
        """The session of a valid, unexpired, unrevoked token; None otherwise (never raises on bad input)."""
        now = time.time() if now is None else now
        payload, dot, sig = token.partition(".")
        if not dot or not hmac.compare_digest(sig.encode("utf-8", "replace"), self._sign(payload).encode()):
            return None
        try:
            data = orjson.loads(_unb64(payload))
            session = Session(user=str(data["u"]), expires=float(data["exp"]), nonce=str(data["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires < now or session.nonce in self._revoked:
            return None
        return session

    def revoke(self, session: Session) -> None:
        now = time.time()
        self._revoked = {n: exp for n, exp in self._revoked.items() if exp >= now}
        self._revoked[session.nonce] = session.expires

    def csrf_token(self, session: Session) -> str:
        return _b64(hmac.new(self._csrf_key, session.nonce.encode(), hashlib.sha256).digest())

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token).encode("utf-8", "replace"),
                                                   self.csrf_token(session).encode())


# -- permissions: one place says who may do what --------------------------------------------------------

def may_view_ops(user: User) -> bool:
    """The operations centre (all teams, the map, warnings): operators and analysts."""
    return user.role in ("operator", "analyst")


def may_place_tickets(user: User) -> bool:
    """Placing unlocated tickets on the map by hand changes data: operators only."""
    return user.role == "operator"


VERIFY_STATES = frozenset({"resolved", "verified", "closed"})


def may_view_case(user: User, case: dict[str, object]) -> bool:
    """Operators and analysts see every case; a member only the cases of their own team, except that
    supervision also sees handled (resolved / verified / closed) cases of any team: checking them is its job
    (DOMAIN.md, "Closing is not the handler's word alone"); a patrol (a user who files patrol reports) sees the
    public reports waiting for its check before filing (status checking)."""
    if may_view_ops(user):
        return True
    if case.get("status") == "checking":       # 核实 before filing: any patrol may check (docs/cases.md §2.4)
        return user.can_patrol
    if user.role != "member" or user.team is None:
        return False
    if user.team == case.get("team"):
        return True
    return user.team == "supervision" and case.get("status") in VERIFY_STATES


def allowed_actions(user: User, case: dict[str, object]) -> list[str]:
    """The case-update actions this user may send for this case now (the worker re-checks them)."""
    if case.get("status") == "checking":       # the patrol's answer to a check before filing
        return ["confirm", "void"] if user.can_patrol else []
    if user.role != "member" or not may_view_case(user, case):
        return []
    status = case.get("status")
    acts: list[str] = []
    if user.team == case.get("team"):
        if status == "dispatched":
            acts += ["accept", "resolve", "reject"]
        elif status == "accepted":
            acts += ["resolve", "reject"]
    # supervision checks other teams' work; what supervision itself handled is checked by a patrol
    # (docs/cases.md §4), so supervision gets no check action on its own cases
    if user.team == "supervision" and case.get("team") != "supervision":
        if status == "resolved":
            acts += ["verify", "reopen"]
        elif status in ("verified", "closed"):
            acts.append("reopen")
    return acts
