"""The HTML pages: sign-in and out, the operations centre, a case, the team feed (their data comes from
pipeline.web.api)."""

from __future__ import annotations

import html
import secrets
from string import Template

from aiohttp import web

from pipeline.web import auth
from pipeline.web.centre import (
    CSRF_COOKIE,
    SESSION,
    TEMPLATES,
    centre_of,
    json_answer,
    problem,
    read_body,
    read_form,
    require,
    user_of,
)
from pipeline.web.users import User

# -- pages ------------------------------------------------------------------------------------------------

def render_page(name: str, request: web.Request, title: str, **values: str) -> web.Response:
    centre = centre_of(request)
    user = user_of(request)
    session = request.get(SESSION)
    csrf = centre.signer.csrf_token(session) if session is not None else ""
    who = ""
    if user is not None:
        team = f" · {user.team}" if user.team else (f" · {user.patrol_team}" if user.patrol_team else "")
        who = (f'<span class="who">{html.escape(user.display or user.name)} ({html.escape(user.role)}'
               f'{html.escape(team)})</span><form method="post" action="/signout" class="inline">'
               f'<input type="hidden" name="csrf_token" value="{html.escape(csrf)}">'
               f'<button type="submit">退出 Sign out</button></form>')
    body = Template((TEMPLATES / name).read_text(encoding="utf-8")).safe_substitute(
        {k: html.escape(v) for k, v in values.items()})
    layout = Template((TEMPLATES / "layout.html").read_text(encoding="utf-8"))
    text = layout.safe_substitute(title=html.escape(title), csrf=html.escape(csrf), who=who, body=body,
                                  role=html.escape(user.role if user else ""),
                                  team=html.escape((user.team or "") if user else ""),
                                  mode="production" if centre.production else "development")
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})


def _home_for(user: User) -> str:
    return "/ops" if auth.may_view_ops(user) else "/feed"


async def home(request: web.Request) -> web.StreamResponse:
    user = user_of(request)
    raise web.HTTPFound(_home_for(user) if user else "/signin")


async def signin_page(request: web.Request, error: str = "") -> web.Response:
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    nxt = request.query.get("next", "")
    response = render_page("signin.html", request, "登录 Sign in", signin_csrf=token, error=error,
                     next=nxt if nxt.startswith("/") and not nxt.startswith("//") else "")
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/signin",
                        secure=centre_of(request).production)
    return response


async def signin(request: web.Request) -> web.StreamResponse:
    centre = centre_of(request)
    form = await read_form(request)
    cookie_token = request.cookies.get(CSRF_COOKIE, "")
    sent = str(form.get("csrf_token", "")).encode("utf-8", "replace")
    if not cookie_token or not secrets.compare_digest(cookie_token.encode("utf-8", "replace"), sent):
        return problem(403, "CSRF token missing or wrong; reload the sign-in page")
    name = str(form.get("name", "")).strip()
    wait = centre.signin_limiter.take(f"{request.remote}|{name}")
    if wait > 0:
        response = await signin_page(request, f"尝试过多 Too many attempts; wait {wait:.0f} s")
        response.set_status(429)
        return response
    user = await centre.run_blocking(centre.users.current.authenticate, name, str(form.get("password", "")))
    if user is None:
        response = await signin_page(request, "用户名或密码错误 Wrong name or password")
        response.set_status(401)
        return response
    nxt = str(form.get("next", ""))
    target = nxt if nxt.startswith("/") and not nxt.startswith("//") else _home_for(user)
    response = web.HTTPFound(target)
    response.set_cookie(auth.COOKIE, centre.signer.issue(user), httponly=True, samesite="Strict", path="/",
                        max_age=int(centre.signer.ttl_s), secure=centre.production)
    response.del_cookie(CSRF_COOKIE, path="/signin")
    raise response


async def signout(request: web.Request) -> web.StreamResponse:
    session = request.get(SESSION)
    if session is not None:
        centre_of(request).signer.revoke(session)
    response = web.HTTPFound("/signin")
    response.del_cookie(auth.COOKIE, path="/")
    raise response


async def api_token(request: web.Request) -> web.Response:
    centre = centre_of(request)
    body = await read_body(request)
    name = str(body.get("name", ""))
    if centre.signin_limiter.take(f"{request.remote}|{name}") > 0:
        return problem(429, "too many attempts")
    user = await centre.run_blocking(centre.users.current.authenticate, name, str(body.get("password", "")))
    if user is None:
        return problem(401, "wrong name or password")
    return json_answer({"token": centre.signer.issue(user), "expires_in": int(centre.signer.ttl_s), "role": user.role,
                  "team": user.team})


async def ops_page(request: web.Request) -> web.Response:
    require(request, auth.may_view_ops)
    return render_page("ops.html", request, "城运中心 Operations centre")


async def case_page(request: web.Request) -> web.Response:
    require(request, lambda u: True)
    return render_page("case.html", request, "案件 Case", case_id=request.match_info["case_id"])


async def feed_page(request: web.Request) -> web.Response:
    require(request, lambda u: u.role in ("member", "patrol"))
    return render_page("feed.html", request, "我的任务 Team feed")
