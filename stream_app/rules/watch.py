"""Hot reload of rule files: a bad edit is rejected whole and the last good rules stay live."""

from __future__ import annotations

import logging
from pathlib import Path

from stream_app.errors import NotReady, RuleFileError
from stream_app.metrics import Metrics
from stream_app.rules.pack import Ruleset, load_rules, region_files, rule_files

__all__ = ["RulesWatch"]

log = logging.getLogger(__name__)


class RulesWatch:
    """Holds the rules in force and reloads them when a rule file changes."""

    def __init__(self, paths: list[Path], metrics: Metrics) -> None:
        self.paths = paths
        self.metrics = metrics
        self._rules: Ruleset | None = None
        self._stamp: tuple = ()

    def current(self) -> Ruleset:
        if self._rules is None:
            raise NotReady("no rules loaded yet")
        return self._rules

    def _files_stamp(self) -> tuple:
        files = [*rule_files(self.paths), *region_files(self.paths)]
        return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())

    def reload_if_changed(self) -> bool:
        if self._files_stamp() == self._stamp:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Load the rule files; on any problem keep the rules in force and say why."""
        self._stamp = self._files_stamp()
        try:
            rules = load_rules(self.paths)
        except (RuleFileError, OSError) as exc:
            log.error("rule reload rejected, keeping the rules in force:\n%s", exc)
            self.metrics.rules_reload_success.set(0)
            self.metrics.rules_reloads.labels("failure").inc()
            if self._rules is None:
                raise
            return False
        self._rules = rules
        self.metrics.rules_loaded.set(len(rules.rules))
        self.metrics.rules_reload_success.set(1)
        self.metrics.rules_reloads.labels("success").inc()
        log.info("rules loaded: %d from %s", len(rules.rules), ", ".join(rules.sources))
        return True
