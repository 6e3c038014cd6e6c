"""Who the account managers are and how each is reached: a YAML file the operator keeps
(`CHURNWATCH_NOTIFY_MANAGERS_FILE`), reread when it changes, so that a manager added, moved or
given a new address counts at the next alert without a restart:

    managers:
      am-17:
        name: Zhang Min
        email: zhang.min@north.example.com     # an e-mail channel (CHURNWATCH_NOTIFY_SMTP_*)
        webhook: https://crm.example.com/hooks/churn   # a signed webhook (an SMS gateway is one too)
        supervisor: sup-3                      # gets the team's digest
      sup-3:
        name: Wang Fang
        email: wang.fang@north.example.com

A customer's manager is the `account_manager` of their profile. Each manager needs a channel;
a supervisor must be listed too, and supervises no one in a loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from stream_app.errors import ConfigError
from stream_app.settings import Settings
from stream_app.yaml_source import WatchedYaml

__all__ = ["Manager", "Directory", "SETTING"]

SETTING = "CHURNWATCH_NOTIFY_MANAGERS_FILE"
ManagerId = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z_.@-]{1,64}$")]


class Manager(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", max_length=120)
    email: str | None = Field(default=None, pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$", max_length=254)
    webhook: AnyHttpUrl | None = None
    supervisor: ManagerId | None = None

    @model_validator(mode="after")
    def _reachable(self) -> "Manager":
        if self.email is None and self.webhook is None:
            raise ValueError("a manager needs an `email` or a `webhook`: there is no other way to reach them")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    managers: dict[ManagerId, Manager] = {}

    @model_validator(mode="after")
    def _supervisors_listed(self) -> "_File":
        for manager_id, m in self.managers.items():
            if m.supervisor is not None and m.supervisor not in self.managers:
                raise ValueError(f"{manager_id}'s supervisor {m.supervisor!r} is not listed under managers")
            seen, boss = {manager_id}, m.supervisor
            while boss is not None:
                if boss in seen:
                    raise ValueError(f"{manager_id}'s supervisors go round in a loop through {boss!r}")
                seen.add(boss)
                boss = self.managers[boss].supervisor
        return self


class Directory:
    """The managers file as it stands: reread when it changes; a bad edit is logged and the file
    read before stays in force."""

    def __init__(self, path: Path) -> None:
        self._watched = WatchedYaml(path, _File, SETTING)

    @classmethod
    def of(cls, settings: Settings) -> "Directory":
        """The settings' managers file, checked against the channels the settings can serve."""
        path = settings.notify.managers_file
        if path is None:
            raise ConfigError(f"{SETTING} is not set: no account manager is known to tell")
        directory = cls(path)
        directory.check(settings)
        return directory

    @property
    def managers(self) -> dict[str, Manager]:
        return self._watched.read().managers

    def manager(self, manager_id: str) -> Manager | None:
        return self.managers.get(manager_id)

    def team(self, supervisor: str) -> list[str]:
        """The managers `supervisor` supervises directly."""
        return sorted(m for m, spec in self.managers.items() if spec.supervisor == supervisor)

    def check(self, settings: Settings) -> None:
        """A ConfigError if a manager has a channel the settings cannot serve."""
        managers = self.managers
        if settings.notify.webhook_secret is None and (who := [m for m, s in managers.items() if s.webhook]):
            raise ConfigError(f"{who[0]} has a webhook but CHURNWATCH_NOTIFY_WEBHOOK_SECRET is not set: "
                              "every webhook body is signed")
        if settings.notify.smtp_host is None and (who := [m for m, s in managers.items() if s.email]):
            raise ConfigError(f"{who[0]} has an e-mail address but CHURNWATCH_NOTIFY_SMTP_HOST is not set")
