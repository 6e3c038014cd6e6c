"""The model's reasons in the words an agent reads aloud: one short sentence per feature that
raised the score, in business terms with units, the customer's own past and, where the
segment's baseline is known, what is usual for customers like them. No feature names, no
standard deviations, no month codes: an agent has seconds before the customer answers.

>>> model_reason("mou_out_30d_mom", {"mou_out_30d": 120.0, "mou_out_prev_30d": 335.0,
...              "mou_out_30d_mom": -0.64, "segment_p50(mou_out_30d_mom)": -0.05})
'Outgoing minutes in the last 30 days: 120, down 64% from 335 the 30 days before; customers like them: down 5%'
"""

from __future__ import annotations

from typing import Callable, Mapping

from stream_app.features.derive import ACTIVITY_PERIODS
from stream_app.rules.summary import like_them, render
from stream_app.windows.state import VIP_TIERS

__all__ = ["MODEL_WORDS", "model_reason"]

Values = Mapping[str, float]


def _period(start: int, stop: int) -> str:
    return f"in the last {stop} days" if start == 0 else f"{start + 1} to {stop} days ago"


def _activity_against_usual(start: int, stop: int) -> Callable[[Values], str]:
    ratio = f"activity_vs_usual_d{start}_{stop}"

    def say(v: Values) -> str:
        fraction = v[ratio]
        how = "as many as usual" if round(abs(fraction) * 100) == 0 else \
            f"{abs(fraction):.0%} {'fewer' if fraction < 0 else 'more'} than usual"
        return f"Calls, messages and data sessions {_period(start, stop)}: {how}"
    return say


def _fixed(template: str) -> Callable[[Values], str]:
    return lambda v: render(template, v)


#: Per model feature, the sentence an agent reads when it raises a customer's score.
MODEL_WORDS: dict[str, Callable[[Values], str]] = {
    "tenure_days": lambda v: f"With us for {v['tenure_days'] / 30.4:.0f} months" if v["tenure_days"] >= 61
    else f"With us for {v['tenure_days']:.0f} days",
    "vip": lambda v: f"VIP tier: {VIP_TIERS[int(v['vip'])]}" if 0 <= v["vip"] < len(VIP_TIERS) else "VIP tier unknown",
    "prepaid": lambda v: "Prepaid line (pays by top-ups)" if v["prepaid"] else "Postpaid line (monthly bill)",
    "postpaid_arpu_m1": _fixed("Bill last month: {arpu_m1:.0f} yuan"),
    "arpu_3m": _fixed("Spend over the last 3 months: {arpu_3m:.0f} yuan a month on average"),
    "postpaid_arpu_mom": _fixed("Bill last month: {arpu_m1:.0f} yuan, {postpaid_arpu_mom:change} from {arpu_m2:.0f}"),
    "postpaid_arpu_cv_6m": _fixed("Bills swing from month to month: by about {postpaid_arpu_cv_6m:.0%} "
                                  "over the last 6 months"),
    "mou_out_m1": _fixed("Outgoing minutes last month: {mou_out_m1:.0f}"),
    "mou_out_mom": _fixed("Outgoing minutes last month: {mou_out_m1:.0f}, {mou_out_mom:change} "
                          "from {mou_out_m2:.0f} the month before"),
    "mou_out_30d": _fixed("Outgoing minutes in the last 30 days: {mou_out_30d:.0f}"),
    "mou_out_30d_mom": _fixed("Outgoing minutes in the last 30 days: {mou_out_30d:.0f}, {mou_out_30d_mom:change} "
                              "from {mou_out_prev_30d:.0f} the 30 days before"),
    "mou_out_14d_trend": _fixed("Outgoing minutes in the last 14 days: {mou_out_14d:.0f}, {mou_out_14d_trend:change} "
                                "from {mou_out_prev_14d:.0f} the 14 days before"),
    "calls_out_30d": _fixed("Outgoing calls in the last 30 days: {calls_out_30d:.0f}"),
    "cs_calls_30d": _fixed("Calls to customer service in the last 30 days: {cs_calls_30d:.0f}"),
    "dropped_rate_30d": _fixed("Dropped calls in the last 30 days: {dropped_rate_30d:.0%} of calls"),
    "offnet_share_30d": _fixed("Minutes to other networks in the last 30 days: {offnet_share_30d:.0%} of "
                               "outgoing minutes, {offnet_share_m2:.0%} two months ago"),
    "data_mom": _fixed("Mobile data last month: {data_mb_m1:,.0f} MB, {data_mom:change} from {data_mb_m2:,.0f} MB"),
    "contacts_m1": _fixed("People called or texted last month: {contacts_m1:.0f}"),
    "contacts_mom": _fixed("People called or texted last month: {contacts_m1:.0f}, {contacts_mom:change} "
                           "from {contacts_m2:.0f}"),
    "days_since_active": _fixed("Last used the phone {days_since_active:.0f} days ago"),
    "mid_high_end": lambda v: "Mid/high-end customer (120 yuan or more a month)" if v["mid_high_end"]
    else "Not a mid/high-end customer",
    "activity_usual": _fixed("Usually {activity_usual:.1f} calls, messages and data sessions a day"),
    **{f"activity_z_d{a}_{b}": _activity_against_usual(a, b) for a, b in ACTIVITY_PERIODS},
}
#: The change behind each model feature whose segment's baseline says what is usual.
_CHANGE_OF = {f"activity_z_d{a}_{b}": f"activity_vs_usual_d{a}_{b}" for a, b in ACTIVITY_PERIODS}


def model_reason(feature: str, values: Values) -> str:
    """The sentence for a model feature that raised a customer's score, with what is usual
    for customers like them where the feature is a change the segment's baseline follows."""
    return MODEL_WORDS[feature](values) + like_them(values, [_CHANGE_OF.get(feature, feature)])
