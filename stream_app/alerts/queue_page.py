"""`churnwatch queue`: the call centre's page. Agents log in, see the day's calls of their
queues in priority order, the reasons in plain words, the suggested action, and record each
call's outcome. The outcome goes to the outcomes topic, and from there to the workers and the
campaign report. What a call may be given is call_queue.py's to decide.

Login: an account of the accounts file (agents.py), checked against its Argon2 hash; or,
behind an auth proxy, the agent its header names. The session lives in a cookie encrypted and
signed by aiohttp-session (Fernet), HttpOnly and SameSite=Strict. Every form carries the
session's CSRF token, and a post without it is refused, whichever way the agent logged in.
Customer ids stay pseudonyms inside the service; only this page turns them into phone
numbers, from a lookup file that the operator controls (`--lookup`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import jinja2
from aiohttp import web
from aiohttp_session import get_session, new_session
from aiohttp_session import setup as setup_sessions
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet
from yarl import URL

from stream_app.alerts.agents import Accounts, Agent
from stream_app.alerts.call_queue import RESULTS, CallQueue, NotRecorded, OutcomeRefused
from stream_app.contracts import segments

__all__ = ["Login", "Lockout", "make_app"]

log = logging.getLogger(__name__)
_templates = jinja2.Environment(loader=jinja2.PackageLoader("stream_app.alerts", "templates"), autoescape=True)
SESSION_HOURS = 12  # a shift
MESSAGES = {"saved": "saved"}  # what a redirect may ask the page to say: never text from the link
FAILED_LOGINS, LOCKOUT_S = 5, 15 * 60  # failures in a row that lock an agent id, and for how long
# aiohttp-session 2.12 keeps the session under a string key of the request, which aiohttp warns
# about on every request; the key is the library's, and nothing of ours can clash with it.
warnings.filterwarnings("ignore", message="It is recommended to use web.RequestKey")


@dataclass(frozen=True)
class Login:
    """How agents prove who they are: the accounts file, and the auth proxy's header if one is in front."""

    accounts: Accounts
    header: str | None = None
    session_key: bytes | None = None  # a Fernet key; None: a new one, valid until the page stops
    secure_cookie: bool = True  # sent over HTTPS only (browsers count http://localhost as secure)


class Lockout:
    """Failed logins per agent id and address: after `FAILED_LOGINS` within `LOCKOUT_S`, that id is
    refused from that address without a password check until the oldest of them is `LOCKOUT_S`
    old. An attempt counts as failed from the moment it starts, so guesses sent at once are
    counted before their hashes are checked; a success clears it. Keyed by address too, so that
    no one can lock an agent out from elsewhere."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, most: int = 10_000) -> None:
        self.clock, self.most = clock, most
        self._failures: dict[tuple[str, str], list[float]] = {}

    def attempt(self, agent_id: str, address: str) -> bool:
        """Whether this attempt may be checked; if so it counts as failed until `succeeded`."""
        now = self.clock()
        if len(self._failures) > self.most:  # forget what has aged out, so random ids cannot grow it
            self._failures = {k: v for k, v in self._failures.items() if now - v[-1] < LOCKOUT_S}
        recent = [t for t in self._failures.get((agent_id, address), []) if now - t < LOCKOUT_S]
        if len(recent) >= FAILED_LOGINS:
            self._failures[(agent_id, address)] = recent
            return False
        self._failures[(agent_id, address)] = recent + [now]
        return True

    def succeeded(self, agent_id: str, address: str) -> None:
        self._failures.pop((agent_id, address), None)


async def _csrf(request: web.Request) -> str:
    session = await get_session(request)
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


async def _check_csrf(request: web.Request, form) -> None:
    """The form's token must be the session's; and a browser that says where a post came from
    must say this site (what protects a page behind an auth proxy whose login rides on every request)."""
    expected = str((await get_session(request)).get("csrf", ""))
    site, origin = request.headers.get("Sec-Fetch-Site"), request.headers.get("Origin")
    foreign = (site is not None and site not in ("same-origin", "none")) or (
        origin is not None and URL(origin).host != request.url.host)
    if foreign or not expected or not hmac.compare_digest(str(form.get("csrf", "")), expected):
        raise web.HTTPForbidden(text="the form has expired or did not come from this page: reload it and try again")


def _render(name: str, **values) -> web.Response:
    return web.Response(text=_templates.get_template(name).render(**values), content_type="text/html")


def make_app(queue: CallQueue, login: Login, refresh_s: float = 60.0,
             lockout: Lockout | None = None) -> web.Application:
    """The page (GET /), the outcome form (POST /outcome), login and logout, a probe (GET
    /healthz), and a refresh loop."""
    app = web.Application()
    storage = EncryptedCookieStorage(Fernet(login.session_key or Fernet.generate_key()), cookie_name="churnwatch_queue",
                                     max_age=SESSION_HOURS * 3600, httponly=True, samesite="Strict",
                                     secure=login.secure_cookie)
    setup_sessions(app, storage)
    lockout = lockout or Lockout()
    hashing = asyncio.Semaphore(2)  # Argon2 takes 64 MiB and a fifth of a second a check: two at a time

    async def agent_of(request: web.Request) -> Agent:
        if login.header:
            agent_id = request.headers.get(login.header, "")
            agent = login.accounts.agent(agent_id)
            if agent is None:
                raise web.HTTPForbidden(text=f"{agent_id or 'no agent'} ({login.header}) has no account on this page")
            return agent
        session = await get_session(request)
        agent_id = str(session.get("agent", ""))
        agent = login.accounts.agent(agent_id)
        if agent is None or session.get("stamp") != login.accounts.stamp(agent_id):
            raise web.HTTPSeeOther("/login")  # not logged in, removed since, or the password changed since
        return agent

    async def page(request: web.Request) -> web.Response:
        agent = await agent_of(request)
        calls = queue.calls(agent)
        return _render("queue.html", day=queue.day, budget=queue.budget, calls=calls, waiting=queue.waiting,
                       results=RESULTS, segments=segments.NAMES, agent=agent, csrf=await _csrf(request),
                       currency=queue.settings.currency, zone=queue.settings.zone, proxied=bool(login.header),
                       message=MESSAGES.get(request.query.get("message", ""), ""))

    async def record(request: web.Request) -> web.Response:
        agent = await agent_of(request)
        form = await request.post()
        await _check_csrf(request, form)
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, queue.record, str(form.get("alert_id", "")), str(form.get("result", "")),
                str(form.get("offer", "")).strip(), agent)
        except OutcomeRefused as exc:
            raise web.HTTPConflict(text=str(exc))
        except NotRecorded as exc:
            raise web.HTTPServiceUnavailable(text=str(exc))
        raise web.HTTPSeeOther(str(URL("/").with_query(message="saved")))

    async def login_form(request: web.Request) -> web.Response:
        if login.header:
            raise web.HTTPSeeOther("/")
        return _render("login.html", csrf=await _csrf(request), failed="failed" in request.query,
                       locked="locked" in request.query)

    async def log_in(request: web.Request) -> web.Response:
        form = await request.post()
        await _check_csrf(request, form)
        agent_id, password = str(form.get("agent", ""))[:64], str(form.get("password", ""))
        address = request.remote or ""
        if not lockout.attempt(agent_id, address):
            log.warning("queue login locked", extra={"agent": agent_id, "address": address})
            raise web.HTTPSeeOther("/login?locked")
        async with hashing:
            agent = await asyncio.get_running_loop().run_in_executor(None, login.accounts.login, agent_id, password)
        if agent is None:
            log.warning("queue login refused", extra={"agent": agent_id, "address": address})
            raise web.HTTPSeeOther("/login?failed")
        lockout.succeeded(agent_id, address)
        session = await new_session(request)  # a fresh session: none set before the login carries over
        session["agent"], session["csrf"] = agent.agent_id, secrets.token_urlsafe(32)
        session["stamp"] = login.accounts.stamp(agent.agent_id)
        log.info("queue login", extra={"agent": agent.agent_id})
        raise web.HTTPSeeOther("/")

    async def log_out(request: web.Request) -> web.Response:
        await _check_csrf(request, await request.post())
        (await get_session(request)).invalidate()
        raise web.HTTPSeeOther("/login")

    async def healthy(request: web.Request) -> web.Response:
        """For probes, which have no login: the page is up, and how many calls it has."""
        return web.json_response({"day": str(queue.day), "calls": len(queue.alerts)})

    async def refresher(app: web.Application):
        async def loop() -> None:
            while True:
                await asyncio.sleep(refresh_s)
                try:
                    await asyncio.get_running_loop().run_in_executor(None, queue.refresh)
                except Exception:  # a broker hiccup must not take the page down; the next refresh retries
                    log.exception("refreshing the call list failed")

        task = asyncio.create_task(loop())
        yield
        task.cancel()

    app.router.add_get("/", page)
    app.router.add_get("/healthz", healthy)
    app.router.add_post("/outcome", record)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", log_in)
    app.router.add_post("/logout", log_out)
    app.cleanup_ctx.append(refresher)
    return app
