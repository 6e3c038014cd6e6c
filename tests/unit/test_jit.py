"""The compiled loops: loaded only when a state is read, cached where the user can write, and
never a record's fault when they cannot compile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READ_AND_WRITE = "from stream_app.windows.state import Windows; Windows.load(['a'], [None]).dump([0]); print('written')"


def test_a_process_with_no_cache_dir_set_compiles_into_the_users_directory_in_the_temporary_one(tmp_path: Path) -> None:
    # As in a container with a read-only root file system: no writable home; /tmp is.
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"TMPDIR": str(tmp_path),
                                                                            "HOME": "/nonexistent"}
    subprocess.run([sys.executable, "-c", READ_AND_WRITE], env=env, cwd=ROOT, check=True, timeout=300)
    cached = {p.name.split(".")[0] for p in (tmp_path / f"churnwatch-numba-{os.getuid()}").rglob("*.nbi")}
    assert {"packing", "counters"} <= cached


def test_a_command_that_reads_no_state_does_not_load_the_compiler() -> None:
    imports = "import sys, stream_app.cli.main, stream_app.windows.state; assert 'numba' not in sys.modules"
    subprocess.run([sys.executable, "-c", imports], cwd=ROOT, check=True, timeout=120)


def _read_and_write_in(tmp_path: Path, extra_env: dict[str, str], tree: Path = ROOT) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"} | extra_env
    return subprocess.run([sys.executable, "-c", READ_AND_WRITE], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)


def test_with_nowhere_to_cache_the_loops_compile_in_memory_and_say_so(tmp_path: Path) -> None:
    # Nowhere writable: not the cache directory set, not the home, not beside the module.
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "stream_app", tree / "stream_app", ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "stream_app" / "windows" / "__pycache__").write_text("a file, not a directory")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    done = _read_and_write_in(tmp_path, {"NUMBA_CACHE_DIR": str(blocked / "cache"), "HOME": str(blocked)}, tree)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "written" and "compiled without a cache" in done.stderr


def test_a_compiler_that_cannot_be_loaded_is_not_ready_rather_than_a_records_fault(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "numba"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('llvmlite is broken')\n")
    failed = _read_and_write_in(tmp_path, {"PYTHONPATH": f"{broken.parent}{os.pathsep}{ROOT}"})
    assert failed.returncode != 0
    assert "CompilerUnavailable: numba cannot be imported" in failed.stderr and "llvmlite is broken" in failed.stderr
