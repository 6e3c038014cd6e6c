"""From a fired rule to a phone call: alerts with reasons and value at stake, each sent once,
the daily call plan, campaign figures and the call-queue page.

Imported on their own, for what they load: `queue_page` (aiohttp and jinja2)."""

from stream_app.alerts.build import (
    FALLBACK_ACTION,
    LEVEL_RISK,
    AlertPolicy,
    ModelView,
    alert_id,
    build_alerts,
    in_holdout,
)
from stream_app.alerts.call_plan import DayPlan, alert_day, monthly_list, observe_call_plan, plan_days, summary_fields
from stream_app.alerts.campaign import CampaignCosts, CampaignRow, campaign_report, latest_outcomes
from stream_app.alerts.ledger import ALERTS, AlertLedger

__all__ = [
    "alert_day", "alert_id", "AlertLedger", "AlertPolicy", "ALERTS", "build_alerts", "campaign_report",
    "CampaignCosts", "CampaignRow", "DayPlan", "FALLBACK_ACTION", "in_holdout", "latest_outcomes", "LEVEL_RISK",
    "ModelView", "monthly_list", "observe_call_plan", "plan_days", "summary_fields"
]
