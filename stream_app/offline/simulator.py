"""Synthetic CDR, billing and profile traffic that looks like a real base (DOMAIN.md).

Heavy-tailed usage, weekly cycles and day-to-day noise; holidays that move everyone at
once; customers who dip for a while and come back; customers whose usage and spend grow over
months; churners who decline for one to three months first (fewer minutes, more off-net calls,
complaints or dropped calls, lower spend) and churners who leave with no warning at all; some
who left over price port their number back; monthly bills; duplicated and late records from
mediation. The ground truth goes to a separate file, never on the wire.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Iterator, NamedTuple

import msgspec
import numpy as np

from stream_app.offline.comebacks import plan_returns
from stream_app.offline.contacts import Contacts

__all__ = ["SimConfig", "SimRecord", "Truth", "Simulator"]

TZ = timezone(timedelta(hours=8))
#: Public holidays that move the whole base (month, first day, days): national day, May day.
HOLIDAYS = ((10, 1, 7), (5, 1, 5), (1, 1, 1))
DECLINE_REASONS = (205, 101, 102, 103)
SILENT_REASONS = (210, 210, 335, 345)
WEEKEND = 0.85  # the whole base's usage on a Saturday or Sunday
COUNTED = ("calls", "cs", "dropped", "offnet", "sms", "data")  # kept per customer and day (`keep_counts`)


@dataclass(frozen=True)
class SimConfig:
    customers: int = 1000
    days: int = 120
    start: date = date(2026, 8, 1)
    seed: int = 7
    monthly_churn: float = 0.02  # the share of the base leaving each month after the warm-up
    warmup_days: int = 70  # history in which nobody leaves
    silent_share: float = 0.3  # churners with no warning signs
    dip_share: float = 0.06  # customers who dip for a while and recover
    # Staying customers whose usage and spend grow over two to six months, to 1.3-2 times what they
    # were (a new job, a family's lines moved onto one plan, a first smartphone): the build-up stage.
    # Drawn apart from the churn plans, which stay the same for a seed. None by default, so that the
    # churn figures measured before them stay comparable; `evaluate --lists` asks for 5%.
    grow_share: float = 0.0
    # Leavers who come back: of those who ported out over price or a promotion (101, 102), the
    # share who port their number back 30 to 120 days later, and use it as they did before their
    # decline. An assumption, not fitted; drawn apart from everything else, so the rest of the
    # traffic stays the same. None by default, as growers; `evaluate --lists` asks for 10%.
    comeback_share: float = 0.0
    duplicate_rate: float = 0.003
    late_rate: float = 0.01  # delivered 1-2 days late, within the default grace
    very_late_rate: float = 0.0005  # delivered 6-10 days late: dead letter
    # ("YYYY-MM", factor): the whole base's usage that month times factor, as in a long
    # holiday, an outage or a price change; None: no such month.
    slump: tuple[str, float] | None = None
    # Keep each customer's `COUNTED` a day (2 bytes each) for `evaluate`'s ceiling; the same traffic either way.
    keep_counts: bool = False
    regions: int = 7  # branches: customer i is in region-(i mod regions)
    # Account managers per region for its gold and diamond customers (0: none has one). Assigned by
    # position, so the traffic is the same either way.
    managers_per_region: int = 0


class SimRecord(NamedTuple):
    topic: str  # "cdr", "billing" or "customers"
    key: bytes
    value: bytes
    day: int  # simulated day of delivery


@dataclass
class Truth:
    customer_id: str
    pattern: str  # stable, dipper, grower, decliner, silent_churner; prompted: left because a call reminded them to
    churn_date: str | None = None
    churn_kind: str | None = None
    reason_code: int | None = None
    decline_start: str | None = None
    dip: list[str] = field(default_factory=list)
    grows: list[str] = field(default_factory=list)  # a grower's first and last day of growth
    grows_by: float | None = None  # what their usage and spend are multiplied by at the end of it
    # The simulated call centre (call_centre.py): the day of the call that reached them and what
    # it did; `planned_churn` keeps the churn date they had before a call changed it (kept:
    # churn_date None; prompted to leave: a churn date they had not planned).
    called: str | None = None
    treatment: str | None = None
    planned_churn: str | None = None
    back_date: str | None = None  # a leaver who ported their number back in: the day (comeback_share)


class Simulator:
    """Generates `SimConfig.days` of traffic for `SimConfig.customers` customers, day by day."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        n, rng = cfg.customers, np.random.default_rng(cfg.seed)
        self.rng = rng
        self.ids = [f"86138{i:08d}" for i in range(n)]
        self.mo_rate = rng.lognormal(np.log(3.0), 0.9, n)
        self.mt_rate = self.mo_rate * rng.uniform(0.6, 1.2, n)
        self.duration = rng.lognormal(np.log(90), 0.5, n)
        self.sms_rate = rng.lognormal(np.log(0.8), 1.0, n)
        self.data_mb = rng.lognormal(np.log(40), 1.2, n)
        self.offnet = rng.beta(2, 6, n)
        self.dropped = rng.uniform(0.005, 0.03, n)
        self.cs_rate = np.full(n, 0.01)
        self.circle = rng.lognormal(np.log(25), 0.6, n)
        self.fee = rng.lognormal(np.log(60), 0.6, n)
        self.prepaid = rng.random(n) < 0.4
        # Prepaid balances start anywhere between two top-ups, so the base does not top up in step
        # (drawn apart from the traffic, which stays the same for a seed).
        self.balance = np.random.default_rng([cfg.seed, 1]).uniform(10.0, 100.0, n)
        self.accrued = np.zeros(n)
        self.mult = np.ones((n, cfg.days))
        self.offnet_extra = np.zeros((n, cfg.days))
        self.cs_mult = np.ones((n, cfg.days))
        self.drop_mult = np.ones((n, cfg.days))
        self.exit_day = np.full(n, cfg.days + 1)
        self.common = np.ones(cfg.days)  # what moves the whole base's habits that day: holidays, a slump
        self.weekday = np.array([WEEKEND if (cfg.start + timedelta(days=d)).weekday() >= 5 else 1.0
                                 for d in range(cfg.days)])  # and the weekend, on top
        self.counts = {k: np.zeros((n, cfg.days), np.int16) for k in COUNTED} if cfg.keep_counts else {}
        self.truth = [Truth(c, "stable") for c in self.ids]
        self.contacts = Contacts(self.ids, cfg.seed)
        self._ramp: dict[int, tuple[int, np.ndarray]] = {}  # decliners: first day, usage multipliers
        self._plan_patterns()
        self.back_day = plan_returns([(t.churn_kind, t.reason_code) for t in self.truth], self.exit_day, cfg.days,
                                     cfg.seed, cfg.comeback_share)
        for i in np.nonzero(self.back_day < cfg.days)[0]:  # the truth says when
            self.truth[i].back_date = str(cfg.start + timedelta(days=int(self.back_day[i])))
        self.back_rng = np.random.default_rng([cfg.seed, 5])  # their days after it: the rest stays the same
        self._delayed: dict[int, list[SimRecord]] = {}
        self._seq = [0, 0]  # event ids: everyone's, and those who came back

    def _plan_patterns(self) -> None:
        cfg, rng, n = self.cfg, self.rng, self.cfg.customers
        # After a warm-up (months of history to judge every churner on); the rate holds after it.
        first = min(cfg.warmup_days, cfg.days - 1)
        p_churn = 1 - (1 - cfg.monthly_churn) ** ((cfg.days - first) / 30)
        churners = np.nonzero(rng.random(n) < p_churn)[0]
        for i in churners:
            day = int(rng.integers(first, cfg.days))
            self.exit_day[i] = day
            t = self.truth[i]
            t.churn_date = str(cfg.start + timedelta(days=day))
            if rng.random() < cfg.silent_share:
                t.pattern, t.reason_code = "silent_churner", int(rng.choice(SILENT_REASONS))
                t.churn_kind = "disconnect" if t.reason_code in (335, 345) else "port_out"
                continue
            t.pattern, t.churn_kind = "decliner", "port_out"
            t.reason_code = int(rng.choice(DECLINE_REASONS))
            start = max(0, day - int(rng.integers(30, 90)))
            t.decline_start = str(cfg.start + timedelta(days=start))
            ramp = np.linspace(1.0, rng.uniform(0.15, 0.5), day - start)
            self.mult[i, start:day] = ramp
            self._ramp[i] = (start, ramp)
            self.offnet_extra[i, start:day] = (1 - ramp) * rng.uniform(0.3, 0.6) * (t.reason_code == 102)
            self.cs_mult[i, start:day] = 1 + 20 * (1 - ramp) * (t.reason_code == 103) + 4 * (1 - ramp)
            self.drop_mult[i, start:day] = 1 + 8 * (1 - ramp) * (t.reason_code == 205)
        others = np.setdiff1d(np.arange(n), churners)
        for i in others[rng.random(len(others)) < cfg.dip_share]:
            start, length = int(rng.integers(0, cfg.days)), int(rng.integers(7, 26))
            self.mult[i, start:start + length] *= rng.uniform(0.05, 0.4)
            self.truth[i].pattern = "dipper"
            self.truth[i].dip = [str(cfg.start + timedelta(days=start)),
                                 str(cfg.start + timedelta(days=min(start + length, cfg.days)))]
        self._plan_growth(np.nonzero([t.pattern == "stable" for t in self.truth])[0])
        for d in range(cfg.days):
            day = cfg.start + timedelta(days=d)
            if any(day.month == m and first <= day.day < first + k for m, first, k in HOLIDAYS):
                self.mult[:, d] *= 0.6
                self.common[d] *= 0.6
            if cfg.slump is not None and day.strftime("%Y-%m") == cfg.slump[0]:
                self.mult[:, d] *= cfg.slump[1]
                self.common[d] *= cfg.slump[1]

    def _plan_growth(self, stable: np.ndarray) -> None:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 2])
        for i in stable[rng.random(len(stable)) < cfg.grow_share]:
            start, length, factor = int(rng.integers(0, cfg.days)), int(rng.integers(60, 181)), rng.uniform(1.3, 2.0)
            ramp = np.linspace(1.0, factor, length)[:cfg.days - start]
            self.mult[i, start:start + len(ramp)] *= ramp
            self.mult[i, start + len(ramp):] *= factor
            t = self.truth[i]
            t.pattern, t.grows_by = "grower", round(float(factor), 3)
            t.grows = [str(cfg.start + timedelta(days=start)), str(cfg.start + timedelta(days=start + length))]

    def records(self) -> Iterator[SimRecord]:
        """Every record, in delivery order."""
        yield from self.profile_records()
        for d in range(self.cfg.days):
            yield from self.day_records(d)

    def account_manager(self, i: int) -> str | None:
        """Customer `i`'s account manager: one of their region's, for gold and diamond customers."""
        if not self.cfg.managers_per_region or self.fee[i] <= 130:
            return None
        return f"am-{i % self.cfg.regions}-{i // self.cfg.regions % self.cfg.managers_per_region}"

    def day_records(self, d: int) -> list[SimRecord]:
        """Day `d`'s records (and those delivered late on it); days go in order, once each."""
        return self._day(d) + self._delayed.pop(d, [])

    def keep(self, i: int, d: int, recover_days: int = 14) -> None:
        """Customer `i`, reached on day `d`, stays: no exit, and what the decline took comes back
        over `recover_days` (their usage, their usual off-net share, complaints and dropped calls)."""
        t = self.truth[i]
        t.planned_churn, t.churn_date, t.churn_kind, t.back_date = t.churn_date, None, None, None  # the reason stays
        self.exit_day[i] = self.back_day[i] = self.cfg.days + 1
        declined = self._declined(i, d, self.cfg.days)  # what the decline takes, day by day from d
        recovery = np.ones(len(declined))
        n = min(recover_days, len(declined))
        recovery[:n] = np.linspace(declined[0] if n else 1.0, 1.0, n)
        self.mult[i, d:] = self.mult[i, d:] / declined * recovery
        for extra, usual in ((self.offnet_extra, 0.0), (self.cs_mult, 1.0), (self.drop_mult, 1.0)):
            extra[i, d:] = usual
        self._ramp.pop(i, None)

    def leave(self, i: int, d: int, reason_code: int) -> bool:
        """Staying customer `i` ports out unwarned on day `d`; False if they left before or `d` is past the end."""
        t = self.truth[i]
        if t.churn_date is not None or d >= self.cfg.days:
            return False
        t.pattern, t.churn_date, t.churn_kind, t.reason_code = "prompted", str(self.cfg.start + timedelta(days=d)), \
            "port_out", reason_code
        self.exit_day[i] = d
        return True

    def _declined(self, i: int, start: int, end: int) -> np.ndarray:
        """The part of customer `i`'s usage multiplier on days `start` to `end` that their
        decline takes away (1: none)."""
        ramp = self._ramp.get(i)
        out = np.ones(max(end - start, 0))
        if ramp is None:
            return out
        first, values = ramp
        for k, day in enumerate(range(start, end)):
            if first <= day < first + len(values):
                out[k] = values[day - first]
        return out

    def _event_id(self) -> str:
        back = self.rng is self.back_rng  # a returner's own numbering: the others' ids stay the same
        self._seq[back] += 1
        return f"sim-{self.cfg.seed}-{'back-' if back else ''}{self._seq[back]}"

    def _emit(self, out: list[SimRecord], topic: str, customer: str, body: dict, d: int) -> None:
        rec = SimRecord(topic, customer.encode(), msgspec.json.encode(body), d)
        r = self.rng.random()
        if topic == "cdr" and r < self.cfg.very_late_rate:
            self._delayed.setdefault(d + int(self.rng.integers(6, 11)), []).append(rec)
        elif topic == "cdr" and r < self.cfg.late_rate:
            self._delayed.setdefault(d + int(self.rng.integers(1, 3)), []).append(rec)
        else:
            out.append(rec)
        if topic == "cdr" and self.rng.random() < self.cfg.duplicate_rate:
            out.append(rec)  # mediation re-sent the same record

    def profile_records(self) -> Iterator[SimRecord]:
        ts = datetime.combine(self.cfg.start, datetime.min.time(), TZ).isoformat()
        for i, c in enumerate(self.ids):
            tier = "diamond" if self.fee[i] > 200 else "gold" if self.fee[i] > 130 else "silver" if self.fee[i] > 90 else "none"
            body = {
                "event_id": self._event_id(), "customer_id": c, "ts": ts,
                "activation_date": str(self.cfg.start - timedelta(days=int(self.rng.integers(30, 3000)))),
                "plan": "prepaid-basic" if self.prepaid[i] else f"postpaid-{int(self.fee[i] // 10 * 10)}",
                "region": f"region-{i % self.cfg.regions}", "vip_tier": tier, "prepaid": bool(self.prepaid[i]),
                "age": int(self.rng.integers(18, 80)),
            }
            if (manager := self.account_manager(i)) is not None:
                body["account_manager"] = manager
            yield SimRecord("customers", c.encode(), msgspec.json.encode(body), 0)

    def _day(self, d: int) -> list[SimRecord]:
        cfg, rng = self.cfg, self.rng
        day = cfg.start + timedelta(days=d)
        noise = rng.gamma(4.0, 0.25, cfg.customers)
        active = self.exit_day > d
        level = self.mult[:, d] * noise * active * self.weekday[d]
        out: list[SimRecord] = []
        if day.day == 1:
            self._bills(out, d, day)
        counts = {
            "mo": rng.poisson(self.mo_rate * level), "mt": rng.poisson(self.mt_rate * level),
            "sms": rng.poisson(self.sms_rate * level), "data": rng.poisson(2 * np.minimum(level, 3) * (self.data_mb > 0)),
            "cs": rng.poisson(self.cs_rate * self.cs_mult[:, d] * active),
        }
        midnight = datetime.combine(day, datetime.min.time(), TZ)
        for i in np.nonzero(active)[0]:
            self._customer_day(out, i, d, midnight, {k: int(v[i]) for k, v in counts.items()})
        for i in np.nonzero(self.exit_day == d)[0]:
            t = self.truth[i]
            self._billing(out, i, d, midnight + timedelta(hours=12), t.churn_kind or "port_out",
                          reason_code=t.reason_code, voluntary=t.reason_code not in (335, 345, 380))
        self._back(out, d, midnight)
        return out

    def _back(self, out: list[SimRecord], d: int, midnight: datetime) -> None:
        """Those who came back, drawn apart (`back_rng`): their port-in, then their usual usage."""
        back = np.nonzero(self.back_day <= d)[0]
        rng, self.rng = self.rng, self.back_rng
        try:
            level = self.rng.gamma(4.0, 0.25, len(back)) * self.mult[back, d] * self.weekday[d]
            for i, lv in zip(back, level):
                if self.back_day[i] == d:
                    self._billing(out, i, d, midnight + timedelta(hours=9), "port_in")
                rates = np.array([self.mo_rate[i], self.mt_rate[i], self.sms_rate[i], self.cs_rate[i]])
                n = dict(zip(("mo", "mt", "sms", "cs"), self.rng.poisson(rates * [lv, lv, lv, 1]).tolist()))
                n["data"] = int(self.rng.poisson(2 * min(lv, 3) * (self.data_mb[i] > 0)))
                self._customer_day(out, i, d, midnight, n)
        finally:
            self.rng = rng

    def _customer_day(self, out: list[SimRecord], i: int, d: int, midnight: datetime, n: dict[str, int]) -> None:
        rng, c = self.rng, self.ids[i]
        minutes = 0.0
        offnet = dropped = 0
        for kind, count in (("MO", n["mo"]), ("MT", n["mt"])):
            for _ in range(count):
                secs = int(rng.exponential(self.duration[i]))
                off = rng.random() < min(0.95, self.offnet[i] + self.offnet_extra[i, d])
                rank = self._rank(i, d)
                j = self.contacts.on_net(i, rank)
                gone = self.exit_day[j] <= d < self.back_day[j]
                ported = self.truth[j].churn_kind == "port_out"
                peer, network, competitor = self.contacts.call(i, rank, off, gone, ported)
                drop = rng.random() < self.dropped[i] * self.drop_mult[i, d]
                offnet, dropped = offnet + (network == "off_net"), dropped + drop
                body = self._cdr(c, midnight, "voice", kind, duration_s=secs, peer_id=peer, peer_network=network,
                                 termination="dropped" if drop else "normal",
                                 long_distance=bool(rng.random() < 0.1), roaming=bool(rng.random() < 0.02))
                if off:
                    rng.random()  # the draw that once chose the competitor, kept: a seed gives the traffic it gave
                if competitor is not None:
                    body["competitor"] = competitor
                self._emit(out, "cdr", c, body, d)
                minutes += secs / 60 if kind == "MO" else 0
        if self.counts:
            for name, value in zip(COUNTED, (n["mo"] + n["mt"], n["cs"], dropped, offnet, n["sms"], n["data"])):
                self.counts[name][i, d] = value
        for _ in range(n["cs"]):
            self._emit(out, "cdr", c, self._cdr(c, midnight, "voice", "MO", duration_s=int(rng.integers(60, 900)),
                                                 peer_network="on_net", customer_service=True), d)
        for _ in range(n["sms"]):
            self._emit(out, "cdr", c, self._cdr(c, midnight, "sms", "MO" if rng.random() < 0.5 else "MT",
                                                 peer_id=self.ids[self.contacts.on_net(i, self._rank(i, d))]), d)
        for _ in range(n["data"]):
            self._emit(out, "cdr", c, self._cdr(c, midnight, "data", "MO",
                                                 data_bytes=int(rng.exponential(self.data_mb[i] / 2) * 1e6)), d)
        # The plan's fee follows the customer's own decline, not what moves the whole base (a holiday
        # week does not cut a monthly fee); the minutes over it follow their usage that day.
        spent = self.fee[i] / 30 * self.mult[i, d] / self.common[d] + 0.05 * minutes
        self.accrued[i] += spent
        if self.prepaid[i]:
            self.balance[i] -= spent
            if self.balance[i] < 10:
                amount = float(rng.choice([30, 50, 100]) * max(1, round(self.fee[i] / 60)))
                self.balance[i] += amount
                self._billing(out, i, d, midnight + timedelta(hours=int(rng.integers(8, 22))), "recharge", amount=amount)

    def _rank(self, i: int, d: int) -> int:
        """The rank of the contact in the customer's circle who takes a call or message: a few close
        contacts get most; a customer in decline keeps only the closest (`contacts.py` says who)."""
        size = max(1, int(self.circle[i] * min(1.0, 0.3 + self.mult[i, d])))
        return min(int(self.rng.zipf(1.6)) - 1, size - 1)

    def _cdr(self, c: str, midnight: datetime, kind: str, direction: str, **extra: object) -> dict:
        ts = midnight + timedelta(seconds=int(self.rng.integers(6 * 3600, 86400)))
        return {"event_id": self._event_id(), "customer_id": c, "ts": ts.isoformat(), "kind": kind,
                "direction": direction, "cell_id": f"cell-{int(self.rng.integers(0, 500))}", **extra}

    def _billing(self, out: list[SimRecord], i: int, d: int, ts: datetime, kind: str, **extra: object) -> None:
        body = {"event_id": self._event_id(), "customer_id": self.ids[i], "ts": ts.isoformat(), "kind": kind, **extra}
        self._emit(out, "billing", self.ids[i], body, d)

    def _bills(self, out: list[SimRecord], d: int, day: date) -> None:
        last_month = (day - timedelta(days=1)).strftime("%Y-%m")
        ts = datetime.combine(day, datetime.min.time(), TZ) + timedelta(hours=2)
        for here, rng in ((self.exit_day > d, self.rng), (self.back_day < d, self.back_rng)):  # returners: apart
            kept, self.rng = self.rng, rng
            for i in np.nonzero((~self.prepaid) & here & (self.accrued > 0))[0]:
                self._billing(out, i, d, ts, "bill", amount=round(float(self.accrued[i]), 2), period=last_month)
            self.rng = kept
        self.accrued[~self.prepaid] = 0.0

    def competitor_truth(self) -> dict[str, tuple[str, float]]:
        """Number -> (competitor, monthly spend) of the competitors' customers our base calls:
        the off-net people, and the customers of ours who ported out by the last day."""
        leavers = {i: float(self.fee[i]) for i, t in enumerate(self.truth)
                   if t.churn_kind == "port_out" and self.exit_day[i] < self.cfg.days <= self.back_day[i]}
        return self.contacts.truth(leavers)

    def truth_lines(self) -> Iterator[bytes]:
        for t in self.truth:
            yield msgspec.json.encode(asdict(t))
