"""The call-queue page without a broker: who gets in, what each agent sees, and what the page
refuses to record (a real broker and browser: tests/integration/test_call_queue.py)."""

from __future__ import annotations

import asyncio
import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from stream_app.alerts.agents import Accounts, Agent, add_agent, remove_agent
from stream_app.alerts.call_queue import CallQueue, OutcomeRefused, load_lookup
from stream_app.alerts.queue_page import FAILED_LOGINS, LOCKOUT_S, Lockout, Login, make_app
from stream_app.contracts.events import AlertReason, Outcome
from stream_app.errors import ConfigError
from stream_app.settings import Settings
from tests.unit.test_campaign import alert

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def queue_with(*alerts, lookup: dict[str, str] | None = None) -> CallQueue:
    queue = CallQueue(Settings(), day=date(2026, 3, 2), budget=5, lookup=lookup, clock=lambda: NOW)
    queue.alerts = list(alerts)
    return queue


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    path = tmp_path / "agents.yaml"
    add_agent(path, "agent-7", "right password", ["general"], "Li Wei")
    add_agent(path, "manager-2", "another password", ["account_manager"])
    add_agent(path, "proxied-1", None, None)
    return Accounts(path)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


async def logged_in(client: TestClient, agent: str, password: str) -> str:
    """Log in through the form; the page's CSRF token afterwards."""
    token = csrf_of(await (await client.get("/login")).text())
    resp = await client.post("/login", data={"agent": agent, "password": password, "csrf": token},
                             allow_redirects=False)
    assert resp.status == 303
    page = await client.get("/", allow_redirects=False)
    return csrf_of(await page.text()) if page.status == 200 else ""


def serve(queue: CallQueue, login: Login, steps) -> object:
    async def run():
        async with TestClient(TestServer(make_app(queue, login, refresh_s=3600))) as client:
            return await steps(client)
    return asyncio.run(run())


def test_the_page_asks_for_a_login_and_refuses_a_wrong_password(accounts: Accounts) -> None:
    async def steps(client: TestClient):
        first = await client.get("/", allow_redirects=False)
        assert (first.status, first.headers["Location"]) == (303, "/login")
        token = csrf_of(await (await client.get("/login")).text())
        for agent, password in (("agent-7", "wrong password"), ("nobody", "right password"),
                                ("proxied-1", "")):  # an account without a password logs in only by proxy
            resp = await client.post("/login", data={"agent": agent, "password": password, "csrf": token},
                                     allow_redirects=False)
            assert resp.headers["Location"] == "/login?failed"
        assert (await client.get("/", allow_redirects=False)).status == 303
        no_token = await client.post("/login", data={"agent": "agent-7", "password": "right password"})
        assert no_token.status == 403
        assert await logged_in(client, "agent-7", "right password")

    serve(queue_with(alert("c1")), Login(accounts, secure_cookie=False), steps)


def test_the_session_cookie_is_secure_httponly_and_strict_by_default(accounts: Accounts) -> None:
    async def steps(client: TestClient):
        return (await client.get("/login")).headers["Set-Cookie"]

    cookie = serve(queue_with(alert("c1")), Login(accounts), steps)
    assert {"Secure", "HttpOnly", "SameSite=Strict"} <= {part.strip() for part in cookie.split(";")}


def test_a_form_from_another_site_or_without_a_session_token_is_refused(accounts: Accounts) -> None:
    async def steps(client: TestClient):
        token = await logged_in(client, "agent-7", "right password")
        data = {"alert_id": alert("c1").alert_id, "result": "accepted", "csrf": token}
        cross = await client.post("/outcome", data=data, headers={"Sec-Fetch-Site": "cross-site"})
        elsewhere = await client.post("/outcome", data=data, headers={"Origin": "https://evil.example"})
        client.session.cookie_jar.clear()
        sessionless = await client.post("/login", data={"agent": "agent-7", "password": "right password", "csrf": "-"})
        return cross.status, elsewhere.status, sessionless.status

    queue = queue_with(alert("c1"))
    assert serve(queue, Login(accounts, secure_cookie=False), steps) == (403, 403, 403) and queue.outcomes == {}


def test_a_new_password_ends_the_sessions_opened_before(accounts: Accounts) -> None:
    async def steps(client: TestClient):
        await logged_in(client, "agent-7", "right password")
        add_agent(accounts.path, "agent-7", "a new password", ["general"], "Li Wei")
        return (await client.get("/", allow_redirects=False)).status

    assert serve(queue_with(alert("c1")), Login(accounts, secure_cookie=False), steps) == 303


def test_guesses_sent_at_once_are_all_counted_against_the_lockout(accounts: Accounts) -> None:
    async def steps(client: TestClient):
        token = csrf_of(await (await client.get("/login")).text())
        guesses = [client.post("/login", data={"agent": "agent-7", "password": f"guess {k}", "csrf": token},
                               allow_redirects=False) for k in range(12)]
        return sorted(r.headers["Location"] for r in await asyncio.gather(*guesses))

    answers = serve(queue_with(alert("c1")), Login(accounts, secure_cookie=False), steps)
    assert answers.count("/login?failed") == FAILED_LOGINS and answers.count("/login?locked") == 12 - FAILED_LOGINS


def test_five_failed_logins_lock_the_agent_id_even_against_the_right_password(accounts: Accounts) -> None:
    now = [0.0]
    lockout = Lockout(clock=lambda: now[0])

    async def attempt(client: TestClient, password: str) -> str:
        token = csrf_of(await (await client.get("/login")).text())
        resp = await client.post("/login", data={"agent": "agent-7", "password": password, "csrf": token},
                                 allow_redirects=False)
        return resp.headers["Location"]

    async def steps(client: TestClient):
        failures = [await attempt(client, "guess") for _ in range(FAILED_LOGINS)]
        locked = await attempt(client, "right password")
        now[0] += LOCKOUT_S
        return failures, locked, await attempt(client, "right password")

    async def run():
        app = make_app(queue_with(alert("c1")), Login(accounts, secure_cookie=False), 3600, lockout)
        async with TestClient(TestServer(app)) as c:
            return await steps(c)

    failures, locked, later = asyncio.run(run())
    assert failures == ["/login?failed"] * FAILED_LOGINS and locked == "/login?locked" and later == "/"


def test_each_agent_sees_the_calls_of_their_queues_with_numbers_currency_and_escaping(accounts: Accounts) -> None:
    reason = AlertReason("mou_drop", 205, 1.0, {}, {}, "Outgoing minutes <script>alert(1)</script> fell 60%")
    general = msgspec.structs.replace(alert("p0000000000000000000001"), reasons=[reason], value_at_risk=1234.4)
    managed = msgspec.structs.replace(alert("p0000000000000000000002"), queue="account_manager")
    queue = queue_with(general, managed, lookup={general.customer_id: "+86 138 0000 0001"})

    async def steps(client: TestClient):
        await logged_in(client, "agent-7", "right password")
        return await (await client.get("/")).text()

    html = serve(queue, Login(accounts, secure_cookie=False), steps)
    assert "+86 138 0000 0001" in html and "&lt;script&gt;" in html and "<script>" not in html
    assert f'data-alert-id="{general.alert_id}"' in html and managed.alert_id not in html
    assert "1,234 CNY" in html and "1 call in your queues" in html and "Li Wei" in html


def test_an_agent_of_a_region_sees_only_that_regions_calls(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    add_agent(path, "north-1", "right password", None, regions=["north"])
    north, south = (msgspec.structs.replace(alert(c), region=r) for c, r in (("c1", "north"), ("c2", "south")))
    agent = Accounts(path).agent("north-1")
    queue = queue_with(north, south)
    assert [c.alert.alert_id for c in queue.calls(agent)] == [north.alert_id]  # type: ignore[arg-type]
    with pytest.raises(OutcomeRefused, match="not on north-1's call list"):
        queue.record(south.alert_id, "accepted", None, agent)  # type: ignore[arg-type]


def test_an_outcome_needs_the_sessions_csrf_token_and_a_call_of_the_agents_queue(accounts: Accounts) -> None:
    managed = msgspec.structs.replace(alert("c2"), queue="account_manager")
    queue = queue_with(alert("c1"), managed)

    async def steps(client: TestClient):
        token = await logged_in(client, "agent-7", "right password")
        forged = await client.post("/outcome", data={"alert_id": alert("c1").alert_id, "result": "accepted"})
        other_queue = await client.post("/outcome", data={"alert_id": managed.alert_id, "result": "accepted",
                                                          "csrf": token})
        unknown = await client.post("/outcome", data={"alert_id": alert("c1").alert_id, "result": "maybe",
                                                      "csrf": token})
        return forged.status, (other_queue.status, await other_queue.text()), (unknown.status, await unknown.text())

    forged, other_queue, unknown = serve(queue, Login(accounts, secure_cookie=False), steps)
    assert forged == 403
    assert other_queue[0] == 409 and "not on agent-7's call list" in other_queue[1]
    assert unknown[0] == 409 and "unknown result 'maybe'" in unknown[1]
    assert queue.outcomes == {}


def test_behind_a_proxy_the_header_names_the_agent_and_an_unknown_one_is_refused(accounts: Accounts) -> None:
    queue = queue_with(alert("c1"))

    async def steps(client: TestClient):
        known = await client.get("/", headers={"X-Forwarded-User": "proxied-1"})
        unknown = await client.get("/", headers={"X-Forwarded-User": "mallory"})
        missing = await client.get("/")
        return known.status, await known.text(), unknown.status, missing.status

    known, html, unknown, missing = serve(queue, Login(accounts, header="X-Forwarded-User", secure_cookie=False), steps)
    assert (known, unknown, missing) == (200, 403, 403)
    assert alert("c1").alert_id in html and "Log out" not in html


def test_an_agent_removed_from_the_file_is_logged_out_at_their_next_request(accounts: Accounts) -> None:
    async def steps(client: TestClient):
        await logged_in(client, "agent-7", "right password")
        before = (await client.get("/", allow_redirects=False)).status
        remove_agent(accounts.path, "agent-7")
        return before, (await client.get("/", allow_redirects=False)).status

    assert serve(queue_with(alert("c1")), Login(accounts, secure_cookie=False), steps) == (200, 303)


def outcome_by(a, result: str, agent: str, minutes_ago: float) -> Outcome:
    return Outcome(f"o-{agent}-{result}", a.customer_id, NOW - timedelta(minutes=minutes_ago), a.alert_id,
                   result, None, agent)  # type: ignore[arg-type]


def test_only_the_agent_who_recorded_an_outcome_corrects_it_and_only_within_the_window(accounts: Accounts) -> None:
    recent, old, missed = alert("c1"), alert("c2"), alert("c3")
    queue = queue_with(recent, old, missed)
    queue.take([outcome_by(recent, "declined", "agent-7", 5), outcome_by(old, "declined", "agent-7", 16),
                outcome_by(missed, "not_reached", "agent-8", 120)])
    mine = accounts.agent("agent-7")
    other = Agent("agent-8", "Wang Fang", frozenset({"general"}))  # a colleague on the same queue
    calls = {c.alert.alert_id: c for c in queue.calls(mine)}  # type: ignore[arg-type]
    assert calls[recent.alert_id].open_until == NOW + timedelta(minutes=10) and calls[recent.alert_id].open
    assert not calls[old.alert_id].open  # 16 minutes ago: past the 15-minute window
    assert calls[missed.alert_id].open and calls[missed.alert_id].open_until is None  # not reached: try again
    assert not {c.alert.alert_id: c for c in queue.calls(other)}[recent.alert_id].open
    for agent, alert_id in ((other, recent.alert_id), (mine, old.alert_id)):
        with pytest.raises(OutcomeRefused, match="can no longer change"):
            queue.record(alert_id, "accepted", None, agent)  # type: ignore[arg-type]


def test_a_correction_does_not_restart_the_window_nor_does_not_reached_reopen_the_call(accounts: Accounts) -> None:
    a = alert("c1")
    queue = queue_with(a)
    queue.take([outcome_by(a, "declined", "agent-7", 14), outcome_by(a, "contacted", "agent-7", 1)])
    mine = accounts.agent("agent-7")
    [call] = queue.calls(mine)  # type: ignore[arg-type]
    assert call.open_until == NOW + timedelta(minutes=1)  # 15 minutes from the first outcome, not the correction
    queue.take([outcome_by(a, "not_reached", "agent-7", 0.5)])
    queue.clock = lambda: NOW + timedelta(minutes=2)
    [call] = queue.calls(mine)  # type: ignore[arg-type]
    assert not call.open  # corrected to "not reached" late: the window still closed


def test_a_bad_edit_of_the_accounts_file_keeps_the_accounts_read_before(accounts: Accounts) -> None:
    accounts.path.write_text("agents: [this is not a mapping")
    assert accounts.agent("agent-7") is not None  # and the error is logged


def test_the_lookup_file_must_name_its_columns(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("customer_id,phone\np1,+8613800000001\n")
    bad.write_text("id,number\np1,+8613800000001\n")
    assert load_lookup(good) == {"p1": "+8613800000001"}
    with pytest.raises(ValueError, match="expected the columns customer_id,phone"):
        load_lookup(bad)


def test_accounts_keep_only_argon2_hashes_and_refuse_unknown_queues(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    add_agent(path, "agent-7", "right password", None)
    text = path.read_text()
    assert "right password" not in text and "$argon2id$" in text and path.stat().st_mode & 0o077 == 0
    assert Accounts(path).login("agent-7", "right password").queues is None  # type: ignore[union-attr]
    path.write_text("agents:\n  agent-9:\n    queues: [sales]\n")
    with pytest.raises(ConfigError, match=r"agents\.agent-9\.queues\.0"):
        Accounts(path)
    path.write_text("agents:\n  agent-9:\n    queues:\n")  # left empty: not read as every queue
    with pytest.raises(ConfigError, match="queues is empty"):
        Accounts(path)
    with pytest.raises(ConfigError, match="agent id 'two words'"):
        add_agent(path.with_name("other.yaml"), "two words", "right password", None)
