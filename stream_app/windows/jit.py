"""The decorator of the compiled loops: numba, imported and compiling on a loop's first call.

Deferred, so that a command that never reads a state does not load numba and LLVM (a third of
a second, and 60 MB before it has compiled anything). numba keeps what it compiled beside the
module or in the user's cache directory, and with neither writable (a container's read-only root
file system) it refuses to compile at all; so unless `NUMBA_CACHE_DIR` says otherwise, the cache
goes to a directory of this user's in the temporary directory: compiled once per machine and
release, loaded by every process after.
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import Any, Callable, TypeVar

__all__ = ["compiled"]

F = TypeVar("F", bound=Callable[..., Any])


def compiled(loop: F) -> F:
    """`loop` compiled to machine code on its first call, run without the interpreter's lock."""
    machine: Callable[..., Any] | None = None

    @functools.wraps(loop)
    def call(*args: Any) -> Any:
        nonlocal machine
        if machine is None:
            os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(),
                                                                  f"churnwatch-numba-{os.getuid()}"))
            import numba  # reads NUMBA_CACHE_DIR when first imported

            machine = numba.njit(cache=True, nogil=True)(loop)
        return machine(*args)

    return call  # type: ignore[return-value]
