"""One root exception; each subclass says what went wrong and with which value."""

from __future__ import annotations

__all__ = ["ChurnwatchError", "ConfigError", "InvalidEvent", "NotReady", "RuleError", "RuleFileError"]


class ChurnwatchError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(ChurnwatchError, ValueError):
    """A setting, argument or file a user gave that cannot be used: the message says which and why."""


class NotReady(ChurnwatchError, RuntimeError):
    """Something this needs is not there (yet): a topic, a server, a worker that stopped."""


class InvalidEvent(ChurnwatchError):
    """An input event that cannot be used. It goes to dead letter, never stops the worker."""

    def __init__(self, reason: str, field: str | None = None, detail: str = "") -> None:
        self.reason = reason
        self.field = field
        self.detail = detail
        where = f" at {field}" if field else ""
        super().__init__(f"{reason}{where}: {detail}" if detail else f"{reason}{where}")


class RuleError(ChurnwatchError):
    """One problem in one rule: file, line, group/rule, field and what is wrong."""

    def __init__(self, file: str, line: int | None, where: str, field: str, problem: str) -> None:
        self.file, self.line, self.where, self.field, self.problem = file, line, where, field, problem
        super().__init__(f"{file}:{line or 0}: {where}: {field}: {problem}")


class RuleFileError(ChurnwatchError):
    """Every problem found in a set of rule files; the set is rejected whole."""

    def __init__(self, problems: list[RuleError]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
