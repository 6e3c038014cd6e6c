"""The competitor list from a hand-made off-net book: one line per number, whichever names the
CDRs gave its operator, widest first within each competitor, and customers of ours only."""

from datetime import date

from stream_app.alerts.competitor import Base, competitor_list, contacts_of
from stream_app.windows.book import Entry, add


def entry(customers: list[str], calls: int = 1, tenths: int = 10) -> Entry:
    e = Entry()
    for c in customers:
        e = add(e, c, calls, tenths)
    return e


def test_a_number_named_under_two_competitors_is_one_line_under_the_name_most_calls_gave() -> None:
    book = {"op-b|n1": entry(["c1", "c2"], calls=3), "|n1": entry(["c3"]), "op-c|n1": entry(["c4"]),
            "op-c|n2": entry(["c1"])}
    base = Base(ours={"c1", "c2", "c3"}, spend=100.0, minutes=500.0)
    listed = competitor_list(book, base, date(2026, 10, 15), 1, 0.4, 10)
    assert [(e.competitor, e.number) for e in listed] == [("op-b", "n1"), ("op-c", "n2")]
    n1 = listed[0]
    assert (n1.calls, n1.customers_of_ours) == (3 * 2 + 1 + 1, 4)
    assert n1.known_by == ["c1", "c2", "c3"]  # c4 is no longer ours
    assert contacts_of(book, ["n1"])["n1"].calls == n1.calls


def test_within_a_competitor_the_widest_first_and_numbers_still_ours_left_out() -> None:
    book = {"op-b|wide": entry([f"c{k}" for k in range(8)]), "op-b|talkative": entry(["c1"], tenths=9000),
            "op-b|c5": entry(["c1", "c2"])}
    base = Base(ours={f"c{k}" for k in range(8)}, spend=200.0, minutes=1000.0)
    listed = competitor_list(book, base, date(2026, 10, 15), 1, 0.5, 1)
    assert [e.number for e in listed] == ["wide"]  # top 1; c5 is a customer of ours
    # 8 minutes over the 15 days counted: 16 a month with us, twice that in all, at 0.2 yuan a minute.
    assert listed[0].monthly_minutes == 16.0 and listed[0].value_estimate == 6.4
