"""The decorator of the compiled loops: numba, imported and compiling on a loop's first call.

Deferred, so that a command that never reads a state does not load numba and LLVM (a third of
a second, and 60 MB before it has compiled anything). numba keeps what it compiled beside the
module or in the user's cache directory, and with neither writable (a container's read-only root
file system) it refuses to cache; so unless `NUMBA_CACHE_DIR` says otherwise, the cache goes to a
directory of this user's in the temporary directory: compiled once per machine and release,
loaded by every process after. Where even that cannot be written, the loops are compiled in
memory, in every process.

A loop that cannot be compiled at all (numba or llvmlite broken in the install) raises
`CompilerUnavailable`: that is the machine's fault, not a record's, so a batch waits (readiness
says why) rather than sending its records to dead letter.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from typing import Any, Callable, TypeVar

from stream_app.errors import NotReady

__all__ = ["CompilerUnavailable", "compiled"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class CompilerUnavailable(NotReady):
    """The compiled loops could not be compiled in this install."""


def compiled(loop: F) -> F:
    """`loop` compiled to machine code on its first call, run without the interpreter's lock."""
    machine: Callable[..., Any] | None = None

    @functools.wraps(loop)
    def call(*args: Any) -> Any:
        nonlocal machine
        if machine is None:
            machine = _compiler(loop)
        try:
            return machine(*args)
        except Exception as exc:
            from numba.core.errors import NumbaError  # loaded by `_compiler` already

            if isinstance(exc, NumbaError):  # the loop failed to type or to lower: every batch would
                raise CompilerUnavailable(f"{loop.__qualname__} does not compile: {exc}") from exc
            raise

    return call  # type: ignore[return-value]


def _compiler(loop: Callable[..., Any]) -> Callable[..., Any]:
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"churnwatch-numba-{os.getuid()}"))
    try:
        import numba  # reads NUMBA_CACHE_DIR when first imported
    except ImportError as exc:
        raise CompilerUnavailable(f"numba cannot be imported, so the state's loops cannot compile: {exc}") from exc
    try:
        return numba.njit(cache=True, nogil=True)(loop)
    except RuntimeError as exc:  # numba found nowhere to write its cache
        log.warning("%s is compiled without a cache (%s); set NUMBA_CACHE_DIR to a writable directory",
                    loop.__qualname__, exc)
        return numba.njit(nogil=True)(loop)
