"""The growth table managers write in YAML beside the rules (`growth:` in a rule file, by default
alert_rules/growth.yaml): what counts as rising spend, and which upsell suits a potential
mid/high-end customer, by what is growing. Like the retention actions, the first upsell that
matches wins, so specific entries go first and a catch-all last."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Driver", "Upsell", "GrowthTable", "DEFAULT_UPSELL"]

Driver = Literal["voice", "data"]  # what rose more last month: outgoing minutes or data
DEFAULT_UPSELL = "review the plan: a bundle above the mid/high-end line"


class Upsell(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    offer: str = Field(min_length=1)
    drivers: list[Driver] | None = None
    vip_tiers: list[Literal["none", "silver", "gold", "diamond"]] | None = None

    def matches(self, driver: str, vip_tier: str) -> bool:
        return ((self.drivers is None or driver in self.drivers)
                and (self.vip_tiers is None or vip_tier in self.vip_tiers))


class GrowthTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Spend must rise by this share of the 3-month average a month, and minutes or data by this share
    # last month, to count as growing: a steady bill wobbles by a few yuan with the minutes over the
    # plan, and that is no trend.
    min_monthly_growth: float = Field(default=0.03, ge=0, le=1)
    upsells: list[Upsell] = Field(default_factory=list)

    def upsell_for(self, driver: str, vip_tier: str) -> str:
        return next((u.offer for u in self.upsells if u.matches(driver, vip_tier)), DEFAULT_UPSELL)
