"""The win-back list: who left lately and is worth calling back, from the live pipeline's churn
events, the alerts before the exit and the calls' outcomes."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest

from stream_app.alerts.winback import HALF_LIFE_DAYS, winback_list, won_back_weeks
from stream_app.contracts.events import Alert, ChurnEvent, Outcome, WonBack
from stream_app.offline.replay import replay
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.reports.list_charts import winback_figure
from stream_app.rules.pack import load_rules
from stream_app.settings import Settings

ZONE = ZoneInfo("Asia/Shanghai")
TODAY = date(2026, 10, 31)
RULES = load_rules([Path(__file__).resolve().parents[2] / "alert_rules"])


def left(customer: str, days_ago: int, arpu: float, kind: str = "port_out", code: int | None = 101,
         voluntary: bool | None = True) -> ChurnEvent:
    return ChurnEvent(customer, TODAY.toordinal() - days_ago, kind, code, voluntary,  # type: ignore[arg-type]
                      "north", "mid_high_end", arpu, 900)


def warned(customer: str, days_ago: int, level: str = "high", holdout: bool = False) -> Alert:
    day = TODAY - timedelta(days=days_ago)
    event = datetime(day.year, day.month, day.day, 12, tzinfo=ZONE)
    return Alert(f"{customer}-{level}-{day}", customer, level, day.strftime("%Y-%m"), event,  # type: ignore[arg-type]
                 event + timedelta(days=7), event, [], 101, "mid_high_end", "gold", 150.0, 900.0, "plan offer",
                 holdout=holdout)


def test_leavers_are_ranked_by_value_fading_with_time_and_say_what_was_known_and_done() -> None:
    churns = [left("c-recent", 10, 200.0), left("c-revenue", 5, 100.0, kind="revenue", code=None, voluntary=None),
              left("c-old", 70, 900.0), left("c-fraud", 3, 500.0, code=345, voluntary=False),
              left("c-control", 20, 150.0),
              left("c-cut-off", 40, 30.0, kind="revenue", code=None, voluntary=None),  # then cut off for non-use:
              left("c-cut-off", 5, 30.0, kind="disconnect", code=380, voluntary=False),  # the latest churn decides
              left("c-no-reason", 4, 300.0, kind="disconnect", code=None, voluntary=None)]  # the operator's doing
    alerts = [warned("c-recent", 30, "medium"), warned("c-recent", 25), warned("c-control", 40, holdout=True),
              warned("c-revenue", 200)]  # c-revenue's alert is too long before to be a warning of it
    call = Outcome("o1", "c-recent", datetime(2026, 10, 7, tzinfo=timezone.utc), alerts[1].alert_id, "declined")
    later = Outcome("o2", "c-control", datetime(2026, 11, 5, tzinfo=timezone.utc), alerts[2].alert_id, "accepted")
    listed = winback_list(churns, alerts, [call, later], TODAY, 60, ZONE)  # the list of TODAY knows nothing of `later`
    assert [e.customer_id for e in listed] == ["c-recent", "c-control", "c-revenue"]  # not the old one, nor fraud
    recent, control, revenue = listed
    assert recent.priority == round(200.0 * 0.5 ** (10 / HALF_LIFE_DAYS), 2) and recent.rank == 1
    assert (recent.warned, recent.called, recent.control, recent.days_since) == ("high", "declined", False, 10)
    assert (control.warned, control.control, control.called) == ("high", True, None)
    assert (revenue.warned, revenue.kind, revenue.tenure_days) == (None, "revenue", 900)
    assert msgspec.json.decode(msgspec.json.encode(recent))["left_on"] == "2026-10-21"
    # The chart adds up to the list: everyone once, in the week bars, with their value, stacked by why.
    fig = winback_figure(listed, "win-back")
    count, value = ([sum(p.get_height() for p in ax.patches) for ax in fig.axes])
    assert count == len(listed) and value == pytest.approx(sum(e.monthly_value for e in listed))
    assert sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts()) == ["101 price", "revenue"]


def test_on_the_simulator_the_list_holds_the_customers_who_really_left_with_their_reasons() -> None:
    sim = Simulator(SimConfig(customers=200, days=110, seed=5, monthly_churn=0.05))
    result = replay(((r.topic, r.key, r.value) for r in sim.records()), Settings(_env_file=None), lambda: RULES,
                    learn=False)
    as_of = sim.cfg.start + timedelta(days=sim.cfg.days - 1)
    listed = winback_list(result.churn, result.alerts, [], as_of, 60, ZONE)
    truth = {t.customer_id: t for t in sim.truth}
    exits = [e for e in listed if e.kind != "revenue"]
    real = {c for c, t in truth.items() if t.churn_date and (as_of - date.fromisoformat(t.churn_date)).days < 60
            and t.reason_code is not None and t.reason_code < 300}
    top = exits[:50]
    assert len(top) >= 10
    # Precision of the top 50 against the simulator's truth: each left, when and why the list says.
    assert all(e.customer_id in real for e in top), [e.customer_id for e in top if e.customer_id not in real]
    assert all(e.reason_code == truth[e.customer_id].reason_code and e.left_on == truth[e.customer_id].churn_date
               for e in top)
    assert {e.customer_id for e in exits} == real  # and every voluntary leaver of the window is on it
    assert [e.priority for e in listed] == sorted((e.priority for e in listed), reverse=True)


def test_the_topics_keep_what_the_widest_window_and_its_warnings_need() -> None:
    from stream_app.alerts.winback import WARNED_DAYS
    from stream_app.connect.topics import WINBACK_DAYS, retention_days

    settings = Settings(_env_file=None)
    kept = retention_days(settings)
    assert min(kept[settings.topics.alerts], kept[settings.topics.churn_events]) >= WINBACK_DAYS + WARNED_DAYS


def test_a_leaver_who_came_back_is_off_the_list_and_counted_in_the_week_they_came_back() -> None:
    churns = [left("c-back", 30, 200.0), left("c-new-line", 20, 120.0), left("c-gone", 10, 80.0),
              left("c-twice", 50, 90.0), left("c-twice", 5, 95.0)]  # back in between, and left again
    back = [WonBack("c-back", TODAY.toordinal() - 3, "c-back", TODAY.toordinal() - 30, "north", "mass"),
            WonBack("c-9", TODAY.toordinal() - 2, "c-new-line", None, "north", "mass"),
            WonBack("c-twice", TODAY.toordinal() - 20, "c-twice", TODAY.toordinal() - 50, "north", "mass"),
            WonBack("c-later", TODAY.toordinal() + 5, "c-gone", None, "north", "mass")]  # after the list's day
    listed = winback_list(churns, [], [], TODAY, 60, ZONE, back)
    assert [e.customer_id for e in listed] == ["c-twice", "c-gone"]
    lists = [msgspec.structs.replace(e, day=str(TODAY - timedelta(days=25))) for e in
             winback_list(churns, [], [], TODAY - timedelta(days=25), 60, ZONE)]  # c-back listed before, c-new-line not
    weeks = won_back_weeks(back[:3] + back[:1], churns, lists)  # c-back read twice: once
    total = weeks[-1]
    assert (total.week, total.won_back, total.same_number, total.new_line, total.listed) == ("all", 3, 2, 1, 2)
    assert total.monthly_value == 200.0 + 120.0 + 90.0  # c-twice's value is that of the exit they came back from
    assert [w.week for w in weeks[:-1]] == sorted({"%d-W%02d" % date.fromordinal(b.day).isocalendar()[:2]
                                                   for b in back[:3]})
