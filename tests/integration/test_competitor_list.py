"""The off-net book and `churnwatch calls competitor` against a real Redis and a real broker: the
workers' script keeps the same book as the in-memory store, under pseudonyms when those are on,
and the list read from it goes to its CSV file, topic and chart, and its size to the metrics."""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Iterator

import msgspec
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from stream_app.alerts.call_plan import observe_lists
from stream_app.cli import main
from stream_app.connect.redis import connect_redis, connect_redis_sync
from stream_app.connect.topic_reader import read_topic
from stream_app.contracts import keys
from stream_app.contracts.lists import CompetitorEntry
from stream_app.metrics import Metrics
from stream_app.offline.simulator import TZ, SimConfig, Simulator
from stream_app.privacy import Pseudonyms, is_pseudonym
from stream_app.rules.pack import load_rules
from stream_app.settings import Settings, Topics
from stream_app.testing import fixed_clock
from stream_app.tools.embedded.servers import redis_server
from stream_app.windows.book import distinct, in_months
from stream_app.windows.scan import read_book
from stream_app.windows.store import MemoryWindowStore, RedisWindowStore
from stream_app.worker.pipeline import BatchOutput, BatchProcessor, RawRecord

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CFG = SimConfig(customers=100, days=70, seed=3, warmup_days=20, monthly_churn=0.05)
DAY = CFG.start + timedelta(days=CFG.days - 1)
MONTHS = ["2026-09", "2026-10"]
KEY = "k" * 32


def _run(store: RedisWindowStore | MemoryWindowStore, settings: Settings) -> Simulator:
    sim = Simulator(CFG)
    offsets: dict[str, int] = {}
    records = []
    for r in sim.records():
        offsets[r.topic] = offsets.get(r.topic, -1) + 1
        records.append(RawRecord(r.topic, 0, offsets[r.topic], r.key, r.value))
    rules = load_rules([REPO / "alert_rules"])
    clock = fixed_clock(datetime.combine(DAY + timedelta(days=1), datetime.min.time(), TZ))
    processor = BatchProcessor(settings, store, lambda: rules, Metrics(CollectorRegistry()), clock=clock)

    async def go() -> None:  # in one loop with the store's closing, which owns its connections
        async def sent(_: BatchOutput) -> None:
            return None

        for k in range(0, len(records), 2000):
            await processor.run(records[k:k + 2000], sent)
        await store.close()

    asyncio.run(go())
    return sim


@pytest.fixture(scope="module")
def plain() -> tuple[dict, Simulator]:
    """The book of the simulated traffic in memory, without pseudonyms."""
    memory = MemoryWindowStore()
    sim = _run(memory, Settings(_env_file=None))
    return in_months(memory.book, MONTHS), sim


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of this module's own, kept across its tests: the book is written once."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield f"redis://127.0.0.1:{server.port}/0"


@pytest.fixture(scope="module")
def books(redis_url: str, plain: tuple[dict, Simulator]) -> tuple[dict, dict, Simulator]:
    """The same traffic's book kept in Redis under pseudonyms, and the plain one."""
    _run(RedisWindowStore(connect_redis(redis_url), ttl_s=86400 * 30), Settings(_env_file=None, pseudonym_key=KEY))
    client = connect_redis_sync(redis_url)
    try:
        kept = read_book(client, MONTHS)
    finally:
        client.close()
    return kept, *plain


def test_redis_keeps_the_same_book_as_memory_under_pseudonyms(books: tuple[dict, dict, Simulator]) -> None:
    kept, plain, sim = books
    assert len(plain) > 100 and len(kept) == len(plain)
    pseudonym = Pseudonyms(KEY.encode())
    for name, e in plain.items():
        competitor, number = name.split("|", 1)
        mine = kept[f"{competitor}|{pseudonym(number)}"]
        assert (mine.calls, mine.tenths) == (e.calls, e.tenths)
        assert sorted(mine.acquaintances) == sorted(pseudonym(c) for c in e.acquaintances)
    assert all(is_pseudonym(name.split("|", 1)[1]) for name in kept)
    # Every number is one the simulated base called on another network; customers of ours who
    # ported out are among them, under the pseudonym they had with us.
    truth = sim.competitor_truth()
    assert {name.split("|", 1)[1] for name in plain} <= set(truth)
    leavers = {t.customer_id for t in sim.truth if t.churn_kind == "port_out"}
    assert leavers & {name.split("|", 1)[1] for name in plain}


def test_the_competitor_list_reads_the_book_produces_itself_and_its_size(
        books: tuple[dict, dict, Simulator], redis_url: str, tansu_bootstrap: str, unique: str,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    kept, _, _ = books
    topic = f"competitor-{unique}"
    for name, value in {"REDIS_URL": redis_url, "KAFKA_BOOTSTRAP": tansu_bootstrap,
                        "CHURNWATCH_TOPIC_CALLS_COMPETITOR": topic, "CHURNWATCH_COMPETITOR_TOP": "20",
                        "CHURNWATCH_RULES_DIR": str(REPO / "alert_rules")}.items():
        monkeypatch.setenv(name, value)
    args = ["calls", "competitor", "--day", DAY.isoformat(), "--produce", "--csv", str(tmp_path / "list.csv"),
            "--plot", str(tmp_path / "list.png"), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["numbers_seen"] == len(kept) and summary["yuan_per_minute"] > 0
    assert summary["customers"] == sum(summary["by_competitor"].values()) == 40  # 20 for each of two competitors
    with (tmp_path / "list.csv").open() as f:
        rows = list(csv.DictReader(f))
    settings = Settings(_env_file=None, kafka_bootstrap=tansu_bootstrap, topics=Topics(calls_competitor=topic))
    sent = sorted(read_topic(settings, topic, msgspec.json.Decoder(CompetitorEntry).decode),
                  key=lambda e: (e.competitor, e.rank))
    assert [r["number"] for r in rows] == [e.number for e in sent] and len(sent) == 40
    for competitor in summary["by_competitor"]:
        mine = [e for e in sent if e.competitor == competitor]
        assert [e.rank for e in mine] == list(range(1, 21))
        assert all(kept[f"{competitor}|{e.number}"].calls == e.calls for e in mine)
        # The widest first, and no number left out is known to more customers of ours than one listed.
        assert [e.customers_of_ours for e in mine] == sorted((e.customers_of_ours for e in mine), reverse=True)
        listed = {e.number for e in mine}
        left_out = [distinct(e.sketch) for name, e in kept.items()
                    if name.startswith(f"{competitor}|") and name.split("|", 1)[1] not in listed]
        assert max(left_out) <= mine[-1].customers_of_ours
    assert (tmp_path / "list.png").stat().st_size > 10_000
    metrics = Metrics(CollectorRegistry())
    client = connect_redis_sync(redis_url)
    try:
        observe_lists(metrics, client.hgetall(keys.LISTS), TZ)
    finally:
        client.close()
    assert metrics.list_customers.labels("competitor")._value.get() == 40


def test_the_competitor_list_refuses_to_run_without_a_book(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("CHURNWATCH_COMPETITOR_DAYS", "0")
    result = CliRunner().invoke(main, ["calls", "competitor"])
    assert result.exit_code == 2 and "CHURNWATCH_COMPETITOR_DAYS is 0" in result.output
    assert "Traceback" not in result.output


def test_the_win_back_list_names_a_port_outs_contacts_still_ours_from_the_book(
        books: tuple[dict, dict, Simulator], redis_url: str) -> None:
    from stream_app.cli.lifecycle import _contacts
    from stream_app.contracts.lists import WinbackEntry

    kept, _, sim = books
    pseudonym = Pseudonyms(KEY.encode())
    ported = [t.customer_id for t in sim.truth if t.churn_kind == "port_out"]
    called = [c for c in ported if any(name.endswith(f"|{pseudonym(c)}") for name in kept)]
    assert called, "some customer who ported out is called by customers of ours after"
    gone = {pseudonym(t.customer_id) for t in sim.truth if t.churn_date}
    listed = [WinbackEntry(rank=1, day=DAY.isoformat(), customer_id=pseudonym(c), left_on=DAY.isoformat(),
                           kind="port_out", reason_code=101, monthly_value=80.0, tenure_days=400, region="r",
                           segment="s", days_since=1, warned=None, control=False, called=None, priority=1.0)
              for c in called]
    settings = Settings(_env_file=None, redis_url=redis_url)
    found = _contacts(settings, listed, DAY, 60)
    assert all(e.contacts_with_us and e.contacts_with_us > 0 for e in found)
    named = {c for e in found for c in e.known_by}
    assert named and not named & gone  # customers of ours, none of them gone
    assert all(len(e.known_by) <= 3 for e in found)


def test_months_the_book_no_longer_keeps_are_refused_and_an_empty_book_is_said(
        monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    from stream_app.cli.lifecycle import _contacts
    from stream_app.contracts.lists import WinbackEntry

    monkeypatch.setenv("REDIS_URL", redis_url)
    result = CliRunner().invoke(main, ["calls", "competitor", "--months", "5"])  # 90 days keep 3 months
    assert result.exit_code == 2 and "3 month(s) at most" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["calls", "competitor", "--day", "2025-01-10", "--json"])
    assert result.exit_code == 0 and "holds no calls for 2024-12, 2025-01" in result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["customers"] == 0
    # A port-out nobody called since: no contacts, and no error.
    gone = WinbackEntry(rank=1, day="2025-01-10", customer_id="8613899999999", left_on="2025-01-01", kind="port_out",
                        reason_code=101, monthly_value=80.0, tenure_days=400, region="r", segment="s", days_since=9,
                        warned=None, control=False, called=None, priority=1.0)
    [found] = _contacts(Settings(_env_file=None, redis_url=redis_url), [gone], date(2025, 1, 10), 60)
    assert (found.contacts_with_us, found.known_by) == (0, [])
