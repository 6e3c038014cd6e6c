"""The call-queue page in a real headless browser (Debian's chromium, driven by Selenium), against a
real worker, broker and Redis: an agent logs in, sees the day's calls in priority order and no
control-group customer, records an outcome by clicking and corrects it, and the correction is what
reaches the worker and the campaign report. And the page follows the topics: a refresh reads only
what they gained."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator

import msgspec
import pytest
import redis
from kafka import KafkaProducer

from stream_app.alerts.agents import add_agent
from stream_app.alerts.build import in_holdout
from stream_app.alerts.call_queue import CallQueue
from stream_app.connect.topic_reader import read_alerts, read_outcomes
from stream_app.connect.topics import ensure_topics
from stream_app.contracts.keys import customer_state
from stream_app.rules.evaluate import LEVELS
from stream_app.settings import Settings, Topics
from stream_app.tools.demo import stop_worker
from stream_app.tools.embedded.process import free_port
from stream_app.windows.state import Windows
from tests.conftest import IN_CI
from tests.factories import Log, decliner
from tests.probes import get
from tests.unit.test_campaign import MONDAY, alert, outcome

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
BUDGET = 4


def customers() -> tuple[list[str], list[str]]:
    """Ten decliners to call, and two the control group keeps (chosen as the worker will choose)."""
    ids = [f"86139{k:08d}" for k in range(200)]
    share = Settings().holdout_share
    return [c for c in ids if not in_holdout(c, share)][:10], [c for c in ids if in_holdout(c, share)][:2]


@pytest.fixture
def browser() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if (binary is None or driver is None) and not IN_CI:
        pytest.skip("the call-queue page test needs Debian's chromium and chromium-driver")
    options = Options()
    options.binary_location = binary  # type: ignore[assignment]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.implicitly_wait(5)
    try:
        yield chrome
    finally:
        chrome.quit()


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "stream_app.cli", *command], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=log.parent, start_new_session=True)


def serving(port: int) -> bool:
    try:
        return get(port, "/")[0] == 200
    except urllib.error.URLError:  # not listening yet
        return False


def wait_for(check, what: str, procs: list[tuple[subprocess.Popen, Path]], timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while True:
        for proc, log in procs:
            assert proc.poll() is None, log.read_text()[-3000:]
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def until(browser, condition, seconds: float = 60):
    """Wait for `condition(browser)` on whichever page is loaded: a click returns before the page
    it leads to has replaced the old one. Generous: a login's password hash and an outcome's first
    send to the broker are slow on a busy machine, and the wait ends as soon as the page is there."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def settled(b):
        # Chromium reports a node replaced between finding it and reading it as an "inspector
        # error" rather than a stale element; it is the same race, so it is tried again too.
        try:
            return condition(b)
        except WebDriverException as error:
            if "does not belong to the document" in str(error):
                return False
            raise

    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(browser, seconds, ignored_exceptions=ignored).until(settled)


def outcome_shown(browser, alert_id: str, text: str) -> bool:
    """Whether the call's line comes to show `text` as its outcome."""
    def shown(b) -> bool:
        row = b.find_element("css selector", f"tr[data-alert-id='{alert_id}']")
        return row.find_element("css selector", ".outcome").text == text

    return until(browser, shown)


def test_agents_see_the_calls_in_order_and_record_an_outcome_that_reaches_the_campaign_report(
        tansu_bootstrap: str, redis_url: str, unique: str, tmp_path: Path, browser,
        monkeypatch: pytest.MonkeyPatch) -> None:
    topics = Topics(**{name: f"{value}-{unique}" for name, value in Topics().model_dump().items()})
    env = dict(os.environ, KAFKA_BOOTSTRAP=tansu_bootstrap, REDIS_URL=redis_url, CHURNWATCH_APP_ID=f"cw-{unique}",
               CHURNWATCH_METRICS_PORT=str(free_port()), CHURNWATCH_RULES_DIR=str(REPO / "alert_rules"),
               CHURNWATCH_BATCH_WITHIN_S="0.2", CHURNWATCH_DAILY_CALL_BUDGET=str(BUDGET),
               **{f"CHURNWATCH_TOPIC_{name.upper()}": value for name, value in topics.model_dump().items()})
    add_agent(tmp_path / "agents.yaml", "agent-7", "a long password", None, "Li Wei")  # every queue
    env["CHURNWATCH_QUEUE_ACCOUNTS"] = str(tmp_path / "agents.yaml")
    for name in ("KAFKA_BOOTSTRAP", *(k for k in env if k.startswith("CHURNWATCH_TOPIC_"))):
        monkeypatch.setenv(name, env[name])
    settings = Settings()
    ensure_topics(settings, tansu_bootstrap)
    to_call, control = customers()
    log = Log()
    for customer in [*to_call, *control]:
        decliner(log, customer)
    producer = KafkaProducer(bootstrap_servers=tansu_bootstrap, acks="all")
    for rec in log.records:
        producer.send(getattr(topics, rec.topic), key=rec.key, value=rec.value)
    producer.flush()
    producer.close()

    worker = start(["worker"], env, tmp_path / "worker.log")
    port = free_port()
    queue = None
    try:
        running = [(worker, tmp_path / "worker.log")]
        alerts = wait_for(lambda: (a := list(read_alerts(settings))) and len(a) >= 12 and a, "the alerts", running)
        assert {a.customer_id for a in alerts if a.holdout} == set(control)
        queue = start(["queue", "--port", str(port), "--refresh-s", "1"], env, tmp_path / "queue.log")
        running.append((queue, tmp_path / "queue.log"))
        wait_for(lambda: serving(port), "the page", running)

        browser.get(f"http://127.0.0.1:{port}/")
        browser.find_element("id", "agent").send_keys("agent-7")
        browser.find_element("id", "password").send_keys("a long password")
        browser.find_element("id", "login").click()
        until(browser, lambda b: b.find_elements("id", "calls"))  # the queue page, not the login page any more
        assert browser.find_element("id", "agent").text == "Li Wei"
        rows = browser.find_elements("css selector", "tr.call")
        shown = [r.get_attribute("data-customer") for r in rows]
        values = [float(r.get_attribute("data-value-at-risk")) for r in rows]
        assert len(rows) == BUDGET and set(shown) <= set(to_call)
        assert not set(shown) & set(control)
        assert values == sorted(values, reverse=True)
        assert rows[0].find_element("css selector", "li").text  # the reasons, in words
        first = rows[0].get_attribute("data-alert-id")
        rows[0].find_element("css selector", "button[value=declined]").click()
        assert outcome_shown(browser, first, "declined")
        assert browser.find_element("id", "message").text == "saved"

        # A wrong button, corrected within the window: the correction is the outcome that counts.
        row = browser.find_element("css selector", f"tr[data-alert-id='{first}']")
        row.find_element("css selector", "details.correct summary").click()
        row.find_element("css selector", "input[name=offer]").send_keys("PLAN20")
        row.find_element("css selector", "button[value=accepted]").click()
        # The click returns before the page is replaced: wait for the new page's line.
        assert outcome_shown(browser, first, "accepted (PLAN20)")
        recorded = wait_for(lambda: (o := list(read_outcomes(settings))) and len(o) == 2 and o,
                            "both outcomes on their topic", running)
        outcome = max(recorded, key=lambda o: o.ts)
        assert (outcome.alert_id, outcome.result, outcome.offer, outcome.agent_id) == \
            (first, "accepted", "PLAN20", "agent-7")

        # The worker read it too: the customer's state holds it, and the accepted offer holds back new alerts.
        client = redis.Redis.from_url(redis_url)
        customer = outcome.customer_id
        kept = wait_for(lambda: (w := Windows.load([customer], [client.get(customer_state(customer))])).text[0]
                        and w.text[0].outcome == "accepted" and w, "the outcome in the worker's state", running)
        client.close()
        assert kept.rec["alerted_level"][0] == len(LEVELS) - 1

        report = subprocess.run([sys.executable, "-m", "stream_app.cli", "report", "campaign", "--json",
                                 "--plot", str(tmp_path / "qini.png")], env=env, capture_output=True, text=True,
                                timeout=120)
        assert report.returncode == 0, report.stderr
        doc = json.loads(report.stdout.strip().splitlines()[-1])
        total = doc["total"]
        # The Qini curve of the campaign so far: the one call, against the control customers held.
        assert doc["qini"]["called"] == 1 and (tmp_path / "qini.png").stat().st_size > 10_000
        # The control group is the control alerts the plan ranked within the budget of 4: of the two, those.
        assert (total["alerts"], total["calls"], total["accepted"]) == (12, 1, 1) and total["holdout"] <= 2
    finally:
        if queue is not None:
            stop_worker(queue)
        stop_worker(worker)


def test_the_page_reads_only_what_the_topics_gained_since_its_last_refresh(
        tansu_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", tansu_bootstrap)
    for name, value in Topics().model_dump().items():
        monkeypatch.setenv(f"CHURNWATCH_TOPIC_{name.upper()}", f"{value}-{unique}")
    settings = Settings()
    ensure_topics(settings, tansu_bootstrap)
    producer = KafkaProducer(bootstrap_servers=tansu_bootstrap, acks="all")

    def send(topic: str, *events) -> None:
        for e in events:
            producer.send(topic, key=e.customer_id.encode(), value=msgspec.json.encode(e))
        producer.flush()

    first, later = [alert(f"cust{k:04d}") for k in range(3)], [alert(f"cust{k:04d}") for k in range(3, 5)]
    send(settings.topics.alerts, *first)
    queue = CallQueue(settings, budget=10)
    try:
        queue.refresh()
        assert (len(queue.alerts), queue.records_read) == (3, 3)
        send(settings.topics.alerts, *later)
        send(settings.topics.outcomes, outcome(later[0], "contacted"))
        queue.refresh()
        assert (len(queue.alerts), queue.records_read) == (5, 6)
        assert queue.outcomes[later[0].alert_id].result == "contacted"
        queue.refresh()
        assert queue.records_read == 6
        # An alert from a wrong clock, a year ahead, does not move the page past every real call.
        send(settings.topics.alerts, alert("cust9999", day=date.today() + timedelta(days=365)))
        queue.refresh()
        assert (queue.day, len(queue.alerts)) == (MONDAY, 5)
    finally:
        queue.close()
        producer.close()
