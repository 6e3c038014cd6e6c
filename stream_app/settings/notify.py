"""How warnings reach the customers' account managers (stream_app/notify, docs/managers.md): who
they are, the channels' servers and secrets, and how hard a delivery is tried."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Notify"]


class Notify(BaseSettings):
    """The notifier's settings, each from its own `CHURNWATCH_NOTIFY_<NAME>` variable."""

    # An empty variable is an unset one: compose passes `${VAR:-}` as "" when the user set nothing.
    model_config = SettingsConfigDict(env_prefix="CHURNWATCH_NOTIFY_", frozen=True, extra="forbid",
                                      env_ignore_empty=True)

    managers_file: Path | None = Field(
        default=None, description="the account managers: a YAML file (`managers:` id -> name, email, webhook, "
                                  "supervisor), reread when it changes; unset, `churnwatch notify` has no one to tell")
    webhook_secret: SecretStr | None = Field(
        default=None, min_length=16, description="HMAC-SHA256 key that signs every webhook body (header "
                                                 "`X-Churnwatch-Signature`); needed once a manager has a webhook")
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120, description="a webhook's answer is awaited this long")
    smtp_host: str | None = Field(default=None, description="the SMTP server e-mails go through; needed once a "
                                                            "manager has an e-mail address")
    smtp_port: int | None = Field(default=None, ge=1, le=65535, description="the SMTP server's port; unset, the "
                                                                         "security's own: 587, 465 or 25")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="`starttls` (port 587), `tls` (port 465) or `none` (a relay on the same host)")
    smtp_username: str | None = Field(default=None, description="the SMTP login, if the server asks for one")
    smtp_password: SecretStr | None = Field(default=None, description="the SMTP login's password")
    smtp_from: str = Field(default="churnwatch@localhost", description="the e-mails' sender address")
    attempts: int = Field(default=6, ge=1, le=20, description="a message is tried this many times, then it goes to "
                                                               "dead letter with the last reason")
    backoff_s: float = Field(default=2.0, gt=0, description="the wait after a first failed try; it doubles after "
                                                            "each, up to `CHURNWATCH_NOTIFY_BACKOFF_MAX_S`")
    backoff_max_s: float = Field(default=60.0, gt=0, description="the longest wait between two tries")
    give_up_s: float = Field(default=120.0, gt=0, le=240, description="a message still failing this long after its "
                                                                      "first try goes to dead letter, tries left or "
                                                                      "not: the batch it is in waits for it")
    digest_hour: int = Field(default=8, ge=0, le=23, description="the hour of the day (operator's zone) the daily "
                                                                 "digests of the day before go out")

    @model_validator(mode="after")
    def _login_is_whole(self) -> "Notify":
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("smtp_username and smtp_password go together")
        return self
