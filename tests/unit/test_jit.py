"""The compiled loops: loaded only when a state is read, and cached where the user can write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_process_with_no_cache_dir_set_compiles_into_the_users_directory_in_the_temporary_one(tmp_path: Path) -> None:
    # As in a container with a read-only root file system: no writable home; /tmp is.
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"TMPDIR": str(tmp_path),
                                                                            "HOME": "/nonexistent"}
    read_and_write = "from stream_app.windows.state import Windows; Windows.load(['a'], [None]).dump([0])"
    subprocess.run([sys.executable, "-c", read_and_write], env=env, cwd=ROOT, check=True, timeout=300)
    cached = {p.name.split(".")[0] for p in (tmp_path / f"churnwatch-numba-{os.getuid()}").rglob("*.nbi")}
    assert {"packing", "counters"} <= cached


def test_a_command_that_reads_no_state_does_not_load_the_compiler() -> None:
    imports = "import sys, stream_app.cli.main, stream_app.windows.state; assert 'numba' not in sys.modules"
    subprocess.run([sys.executable, "-c", imports], cwd=ROOT, check=True, timeout=120)
