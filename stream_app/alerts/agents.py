"""Who may use the call-queue page, and which calls each agent sees.

The call centre's supervisor keeps the accounts in a YAML file (`CHURNWATCH_QUEUE_ACCOUNTS`):

    agents:
      agent-7:
        name: Li Wei
        password: $argon2id$v=19$m=65536,t=3,p=4$...   # written by `churnwatch agent add`
        queues: [general, technical]                  # left out: every queue
        regions: [north]                              # left out: every region

Passwords are kept only as Argon2id hashes (argon2-cffi, with its default cost), never in
clear. The file is reread when it changes, so an agent added or removed counts at their next
request, without a restart. Behind an auth proxy (`CHURNWATCH_QUEUE_AUTH_HEADER`) the proxy
checks the password, and an account needs no `password`, only its queues.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, model_validator

from stream_app.contracts.events import QueueName
from stream_app.errors import ConfigError
from stream_app.yaml_source import WatchedYaml, read_model

__all__ = ["Agent", "Accounts", "add_agent", "remove_agent", "hash_password"]

_hasher = PasswordHasher()
SETTING = "CHURNWATCH_QUEUE_ACCOUNTS"
AgentId = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z_.@-]{1,64}$")]


class _Account(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_empty_lists(cls, data: object) -> object:
        """`queues:` left empty would read as every queue: say which was meant instead."""
        for key in ("queues", "regions"):
            if isinstance(data, dict) and key in data and data[key] is None:
                raise ValueError(f"{key} is empty: list some, or leave the key out for all")
        return data

    name: str | None = None
    password: str | None = Field(default=None, pattern=r"^\$argon2")
    queues: list[QueueName] | None = Field(default=None, min_length=1)
    regions: list[str] | None = Field(default=None, min_length=1)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents: dict[AgentId, _Account] = {}


@dataclass(frozen=True)
class Agent:
    """A logged-in agent: who records the outcomes, and the queues and regions whose calls they see."""

    agent_id: str
    name: str
    queues: frozenset[str] | None  # None: every queue
    regions: frozenset[str] | None = None  # None: every region

    def sees(self, queue: str, region: str = "") -> bool:
        return (self.queues is None or queue in self.queues) and (self.regions is None or region in self.regions)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _read(path: Path) -> _File:
    return read_model(path, _File, SETTING)


class Accounts:
    """The accounts file, reread when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._watched = WatchedYaml(path, _File, SETTING, missing="; create it with `churnwatch agent add`")

    @property
    def _file(self) -> _File:
        return self._watched.read()

    def agent(self, agent_id: str) -> Agent | None:
        """The agent with this id, if the file still lists them."""
        account = self._file.agents.get(agent_id)
        if account is None:
            return None
        return Agent(agent_id, account.name or agent_id, frozenset(account.queues) if account.queues else None,
                     frozenset(account.regions) if account.regions else None)

    def stamp(self, agent_id: str) -> str:
        """What a session holds of the account it was opened with: a new password, or the id given
        to someone else, ends the sessions opened before."""
        account = self._file.agents.get(agent_id)
        return hashlib.sha256((account.password or "proxy").encode()).hexdigest()[:16] if account else ""

    def login(self, agent_id: str, password: str) -> Agent | None:
        """The agent, if the password matches their hash. An unknown id costs a hash too, so
        that the time taken does not tell which ids exist."""
        account = self._file.agents.get(agent_id)
        stored = account.password if account and account.password else _DECOY
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return self.agent(agent_id) if account and account.password else None


_DECOY = _hasher.hash("not an account")


def add_agent(path: Path, agent_id: str, password: str | None, queues: list[str] | None,
              name: str | None = None, regions: list[str] | None = None) -> None:
    """Add or replace one account (a password of None: the agent logs in through an auth proxy)."""
    try:
        TypeAdapter(AgentId).validate_python(agent_id)
    except ValidationError:
        raise ConfigError(f"agent id {agent_id!r}: expected 1 to 64 letters, digits or _.@-") from None
    accounts = _read(path)
    given = {"name": name, "password": hash_password(password) if password else None, "queues": queues or None,
             "regions": regions or None}
    accounts.agents[agent_id] = _Account.model_validate({k: v for k, v in given.items() if v is not None})
    _write(path, accounts)


def remove_agent(path: Path, agent_id: str) -> None:
    accounts = _read(path)
    if accounts.agents.pop(agent_id, None) is None:
        raise ConfigError(f"{path}: no agent {agent_id!r}")
    _write(path, accounts)


def _write(path: Path, accounts: _File) -> None:
    """The whole file, written to a temporary file and renamed: a page reading it never sees half."""
    text = yaml.safe_dump(accounts.model_dump(exclude_none=True), sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o600)  # hashes, but still nobody else's to read
    os.replace(tmp, path)
