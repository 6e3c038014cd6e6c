"""Reading a YAML file a manager wrote: a key given twice is an error (PyYAML would keep the last
silently), and every node's line is known, so that each problem names the line to fix. A file
the service rereads when it changes (accounts, account managers) is a `WatchedYaml`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from stream_app.errors import ConfigError

__all__ = ["UniqueKeyLoader", "WatchedYaml", "line_map", "load_yaml", "read_model"]

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice (PyYAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def line_map(text: str) -> dict[tuple, int]:
    """(path...) -> 1-based line of every node in a YAML document."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                walk(value, path + (key.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def read_model(path: Path, model: type[M], setting: str, empty_ok: bool = True) -> M:
    """The file read into `model`, or a ConfigError naming the file, the place in it and the
    setting that names the file. An absent or empty file reads as empty, unless not `empty_ok`."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML ({' '.join(str(exc).split())}); the file of {setting}") from None
    if not doc and not empty_ok:
        raise ConfigError(f"{path}: empty or gone (write the file aside and rename it over); the file of {setting}")
    try:
        return model.model_validate(doc or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "the file"
        raise ConfigError(f"{path}: {where}: {err['msg']} (the file of {setting})") from None


class WatchedYaml(Generic[M]):
    """A YAML file read into `model`, reread when its modification time or size changes: a valid
    edit counts at the next `read`, without a restart; one that is not valid, an empty file (one
    being rewritten) or a file gone is logged and what was read before stays in force (at start,
    the error is raised: nothing was read before)."""

    def __init__(self, path: Path, model: type[M], setting: str, missing: str = "") -> None:
        self.path, self.model, self.setting, self.missing = path, model, setting, missing
        self._stamp: tuple[int, int] | None = None
        self._value: M | None = None
        self.read()

    def read(self) -> M:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            problem = ConfigError(f"{self.path}: no such file{self.missing}; or change {self.setting}")
            return self._keep(problem)
        if (stat.st_mtime_ns, stat.st_size) != self._stamp:
            self._stamp = (stat.st_mtime_ns, stat.st_size)
            try:
                # After start, an empty document is most likely a file being rewritten in place (or
                # gone between the stat and the read): what was read before stays in force.
                self._value = read_model(self.path, self.model, self.setting, empty_ok=self._value is None)
            except ConfigError as exc:
                return self._keep(exc)
        assert self._value is not None
        return self._value

    def _keep(self, problem: ConfigError) -> M:
        """What was read before, with the problem logged; at start, the problem is raised."""
        if self._value is None:
            raise problem
        log.error("%s; what was read before stays in force", problem)
        return self._value
