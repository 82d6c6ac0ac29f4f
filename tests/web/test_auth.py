"""Sessions, CSRF tokens, production secrets and the permission rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.web import auth
from pipeline.web.users import User

OPS = User("ops", "operator", password_hash="x")
HAND = User("hand", "member", team="handling", password_hash="x")
SUP = User("sup", "member", team="supervision", password_hash="x")
ANALYST = User("an", "analyst", password_hash="x")


def test_token_round_trip_expiry_and_revocation() -> None:
    """A token verifies until it expires or is revoked; another secret never verifies it."""
    signer = auth.Signer(b"k1", ttl_s=100)
    token = signer.issue(OPS, now=1000.0)
    session = signer.verify(token, now=1050.0)
    assert session is not None and session.user == "ops"
    assert signer.verify(token, now=1101.0) is None
    assert auth.Signer(b"k2").verify(token, now=1050.0) is None
    signer.revoke(session)
    assert signer.verify(token, now=1050.0) is None


@given(st.text(max_size=200))
def test_garbage_tokens_never_verify(token: str) -> None:
    """Any string that was not issued is refused without raising."""
    assert auth.Signer(b"k").verify(token) is None


def test_tampered_payload_is_refused() -> None:
    signer = auth.Signer(b"k")
    token = signer.issue(HAND)
    payload, sig = token.split(".")
    forged = auth._b64(auth._unb64(payload).replace(b"hand", b"ops_"))
    assert signer.verify(f"{forged}.{sig}") is None


def test_csrf_token_is_bound_to_the_session() -> None:
    signer = auth.Signer(b"k")
    a = signer.verify(signer.issue(OPS))
    b = signer.verify(signer.issue(OPS))
    assert a is not None and b is not None
    assert signer.check_csrf(a, signer.csrf_token(a))
    assert not signer.check_csrf(a, signer.csrf_token(b))
    assert not signer.check_csrf(a, None)


def test_production_refuses_missing_default_and_short_secrets() -> None:
    """In production there is no default secret; development falls back to the dev secret."""
    prod = {"CITYOPS_ENV": "production"}
    with pytest.raises(auth.SecretError, match="must be set"):
        auth.server_secret(prod)
    with pytest.raises(auth.SecretError, match="development default"):
        auth.server_secret({**prod, "CITYOPS_SECRET": auth.DEV_SECRET})
    with pytest.raises(auth.SecretError, match="too short"):
        auth.server_secret({**prod, "CITYOPS_SECRET": "short"})
    assert auth.server_secret({**prod, "CITYOPS_SECRET": "x" * 40}) == b"x" * 40
    assert auth.server_secret({}) == auth.DEV_SECRET.encode()


def test_members_see_only_their_team_and_supervision_sees_handled_cases() -> None:
    open_handling = {"team": "handling", "status": "dispatched"}
    resolved_handling = {"team": "handling", "status": "resolved"}
    assert auth.may_view_case(OPS, open_handling) and auth.may_view_case(ANALYST, open_handling)
    assert auth.may_view_case(HAND, open_handling)
    assert not auth.may_view_case(SUP, open_handling)
    assert auth.may_view_case(SUP, resolved_handling)
    assert not auth.may_view_case(User("e", "member", team="enforcement", password_hash="x"), open_handling)


def test_allowed_actions_follow_the_lifecycle() -> None:
    """Only the assigned team accepts/resolves/rejects; only supervision verifies and reopens; others nothing."""
    assert auth.allowed_actions(HAND, {"team": "handling", "status": "dispatched"}) == ["accept", "resolve", "reject"]
    assert auth.allowed_actions(HAND, {"team": "handling", "status": "accepted"}) == ["resolve", "reject"]
    assert auth.allowed_actions(HAND, {"team": "handling", "status": "resolved"}) == []
    assert auth.allowed_actions(SUP, {"team": "handling", "status": "resolved"}) == ["verify", "reopen"]
    assert auth.allowed_actions(SUP, {"team": "handling", "status": "closed"}) == ["reopen"]
    assert auth.allowed_actions(OPS, {"team": "handling", "status": "dispatched"}) == []
    assert auth.allowed_actions(SUP, {"team": "handling", "status": "dispatched"}) == []
