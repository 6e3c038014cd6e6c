"""The CDRs applied column-wise (windows/columns.py) give what applying every event one by one gives."""

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from stream_app.contracts.events import decode_billing, decode_cdr, decode_profile
from stream_app.contracts.inputs import Input
from stream_app.ingest.admission import Erasure
from stream_app.testing import billing, cdr, profile
from stream_app.windows import columns
from stream_app.windows.apply import ApplyResult, Envelope, apply
from stream_app.windows.state import Windows
from tests.factories import envelope

SH = ZoneInfo("Asia/Shanghai")
CUSTOMERS = [f"86138000000{i:02d}" for i in range(8)]
START = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _cdr(rng: random.Random, customer: str, ts: datetime) -> bytes:
    kind = rng.choice(["voice", "voice", "sms", "data"])
    return cdr(customer, ts.isoformat(), kind=kind, direction=rng.choice(["MO", "MT"]),
               duration_s=rng.randrange(0, 900) if kind == "voice" else 0,
               data_bytes=rng.randrange(0, 5_000_000) if kind == "data" else 0,
               peer_id=rng.choice([None, "", "13900000001", "13900000002", f"139{rng.randrange(10**8):08d}"]),
               peer_network=rng.choice([None, "on_net", "off_net", "fixed"]),
               competitor=rng.choice([None, "=rival", "other"]), roaming=rng.random() < 0.2,
               long_distance=rng.random() < 0.2, forwarded=rng.random() < 0.1,
               customer_service=rng.random() < 0.1, termination=rng.choice(["normal", "dropped", "busy"]))


class Traffic:
    """Random batches with what a mediation system sends: late records, resends, replays, a customer
    read from two partitions, bills, profiles, exits and returns, tombstones."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.offsets = {topic: 0 for topic in Input}
        self.sent: list[tuple[int, Envelope]] = []
        self.clock = START

    def _next(self, topic: Input, event: object, partition: int = 0) -> Envelope:
        self.offsets[topic] += 1
        return envelope(topic, partition, self.offsets[topic], event)

    def _one(self) -> Envelope:
        rng = self.rng
        customer = rng.choice(CUSTOMERS)
        ts = self.clock - timedelta(days=rng.choice([0, 0, 0, 0, 0, 0, 1, 2, 4, 9]), hours=rng.randrange(24))
        roll = rng.random()
        if roll < 0.06:
            kind = rng.choice(["bill", "recharge", "disconnect", "reconnect", "port_out", "port_in"])
            why = {"reason_code": 101} if kind in ("disconnect", "port_out") else {}
            period = {"period": "2026-02"} if kind == "bill" else {}
            raw = billing(customer, ts.isoformat(), kind, amount=12.5, **why, **period)
            return self._next(Input.BILLING, decode_billing(raw))
        if roll < 0.09:
            return self._next(Input.CUSTOMERS, decode_profile(profile(customer, ts.isoformat())))
        if roll < 0.10:
            return self._next(Input.CUSTOMERS, Erasure(customer))
        partition = 1 if roll < 0.12 else 0
        return self._next(Input.CDR, decode_cdr(_cdr(rng, customer, ts)), partition)

    def batch(self) -> list[Envelope]:
        self.clock += timedelta(hours=self.rng.randrange(1, 30))
        out = [self._one() for _ in range(self.rng.randrange(1, 60))]
        if self.sent and self.rng.random() < 0.5:  # a producer's resend: the same event at a new offset
            for env in self.rng.sample(self.sent, min(5, len(self.sent))):
                if isinstance(env.event, type(out[0].event)) and not isinstance(env.event, Erasure):
                    out.append(self._next(Input(env.topic), env.event))
        self.sent += out
        if self.rng.random() < 0.2:  # a replay after a crash: records already applied come again
            out = self.rng.sample(self.sent, min(10, len(self.sent))) + out
        return out


def _run(batches: list[list[Envelope]], grace: int) -> list[tuple]:
    stored: dict[str, bytes] = {}
    seen = []
    for envs in batches:
        customers = list(dict.fromkeys(env.event.customer_id for env in envs))
        w = Windows.load(customers, [stored.get(c) for c in customers])
        row = {c: i for i, c in enumerate(customers)}
        result = apply(w, [(row[env.event.customer_id], env) for env in envs], SH, grace)
        changed = sorted(result.changed)
        stored.update(zip((customers[i] for i in changed), (new for _, new in w.dump(changed))))
        seen.append(_summary(result, customers) + (dict(stored),))
    return seen


def _summary(result: ApplyResult, customers: list[str]) -> tuple:
    return (result.applied, result.replayed, result.duplicates, sorted(customers[i] for i in result.changed),
            [(env.topic, env.partition, env.offset, why.reason, why.detail) for env, why in result.refused],
            sorted(result.offnet), sorted(result.moves.exits.items()), sorted(result.moves.returns.items()))


@pytest.mark.parametrize("seed", range(12))
def test_column_wise_gives_what_one_by_one_gives(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    traffic = Traffic(seed)
    batches = [traffic.batch() for _ in range(40)]
    column_wise = _run(batches, grace=3)

    def refuse(*args: object) -> columns.Planned:
        raise RuntimeError("one by one")

    monkeypatch.setattr(columns, "plan", refuse)  # `apply` then takes every event one by one
    assert column_wise == _run(batches, grace=3)
    applied = sum(step[0] for step in column_wise)
    assert applied > 500 and sum(step[1] for step in column_wise) and sum(step[2] for step in column_wise)
    assert {"late", "before_return"} <= {r[3] for step in column_wise for r in step[4]}


def test_most_cdrs_of_a_plain_batch_go_column_wise() -> None:
    envs = [envelope(0, 0, i, decode_cdr(cdr(CUSTOMERS[i % 4], "2026-03-01T10:00:00+08:00"))) for i in range(12)]
    envs.append(envelope(1, 0, 0, decode_billing(billing(CUSTOMERS[0], "2026-03-01T10:00:00+08:00", "recharge"))))
    envs.append(envelope(0, 1, 99, decode_cdr(cdr(CUSTOMERS[1], "2026-03-01T11:00:00+08:00"))))  # another partition
    w = Windows.load(CUSTOMERS[:4], [None] * 4)
    planned = columns.plan(w, [(CUSTOMERS.index(e.event.customer_id), e) for e in envs], SH, 3)
    assert planned.positions == [2, 3, 6, 7, 10, 11]  # customers 2 and 3: CDRs alone, one partition
    assert planned.rest == [0, 1, 4, 5, 8, 9, 12, 13]


def test_an_empty_batch_is_planned_without_a_fallback() -> None:
    planned = columns.plan(Windows.load([], []), [], SH, 3)
    assert (planned.positions, planned.rest, planned.applied) == ([], [], 0)
