"""tests/warm_python.py runs a script as ``python script.py`` would, so a docs example that
fails fails here too: exit status, output, environment, cwd, argv, threads, atexit, timeouts,
and one script's imports never reaching the next."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.warm_python import WarmPython

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture(scope="module")
def warm() -> Iterator[WarmPython]:
    parent_env = {k: v for k, v in os.environ.items() if k != "WARM_ONLY_IN_PARENT"}
    parent_env["WARM_ONLY_IN_PARENT"] = "1"
    started = WarmPython(sys.executable, ["json", "not_a_module_anywhere"], parent_env)
    yield started
    started.close()


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "example.py"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path.name


def both(
    warm: WarmPython, tmp_path: Path, body: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """The script run warm and cold, with the same cwd and environment."""
    name = script(tmp_path, body)
    full = {"PATH": os.environ.get("PATH", ""), **(env or {})}
    hot = warm.run([name], cwd=tmp_path, env=full, timeout=60)
    cold = subprocess.run(
        [sys.executable, name], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60
    )
    return hot, cold


def test_output_status_env_cwd_and_argv_are_the_scripts_own(
    warm: WarmPython, tmp_path: Path
) -> None:
    hot, cold = both(
        warm,
        tmp_path,
        """
        import os, sys
        print("cwd", os.getcwd())
        print("argv", sys.argv)
        print("path0", sys.path[0])
        print("mine", os.environ.get("MINE"), "parent", os.environ.get("WARM_ONLY_IN_PARENT"))
        print("main", __name__, __file__)
        print("to stderr", file=sys.stderr)
        sys.exit(3)
        """,
        {"MINE": "yes"},
    )
    assert hot.returncode == cold.returncode == 3
    assert hot.stdout == cold.stdout
    assert hot.stderr == cold.stderr == "to stderr\n"
    assert f"cwd {tmp_path}" in hot.stdout
    assert f"path0 {tmp_path}" in hot.stdout  # not tests/, where warm_python.py lives
    assert "mine yes parent None" in hot.stdout


def test_an_uncaught_exception_fails_the_run_with_its_traceback(
    warm: WarmPython, tmp_path: Path
) -> None:
    hot, cold = both(warm, tmp_path, "print('before')\nraise ValueError('the docs are wrong')\n")
    assert hot.returncode == cold.returncode == 1
    assert hot.stdout == cold.stdout == "before\n"
    assert hot.stderr.rstrip().endswith("ValueError: the docs are wrong")


def test_threads_are_joined_and_atexit_runs_before_the_exit(
    warm: WarmPython, tmp_path: Path
) -> None:
    hot, cold = both(
        warm,
        tmp_path,
        """
        import atexit, threading, time
        atexit.register(print, "atexit ran")
        threading.Thread(target=lambda: (time.sleep(0.2), print("thread done"))).start()
        print("main done")
        """,
    )
    assert hot.returncode == cold.returncode == 0
    assert hot.stdout == cold.stdout == "main done\nthread done\natexit ran\n"


def test_only_the_preloaded_modules_are_shared_never_what_a_script_imported(
    warm: WarmPython, tmp_path: Path
) -> None:
    first, _ = both(warm, tmp_path, "import csv, sys\nprint('json' in sys.modules)\n")
    second, _ = both(warm, tmp_path, "import sys\nprint('csv' in sys.modules)\n")
    assert first.stdout == "True\n"  # preloaded (and a missing preload was no error)
    assert second.stdout == "False\n"  # the first script's import stayed in its own process


def test_a_script_that_runs_too_long_is_killed_and_reported(
    warm: WarmPython, tmp_path: Path
) -> None:
    name = script(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run([name], cwd=tmp_path, env={}, timeout=0.5)
    # and the parent serves the next script
    after = warm.run([script(tmp_path, "print('next')")], cwd=tmp_path, env={}, timeout=60)
    assert (after.returncode, after.stdout) == (0, "next\n")


def test_the_parents_heap_is_frozen_and_the_scripts_own_garbage_is_still_collected(
    warm: WarmPython, tmp_path: Path
) -> None:
    """The parent freezes what its imports made (gc.freeze, as the gc docs advise before fork:
    a child's collections would otherwise copy every page of the parent's heap); a script's
    own cycles are collected as in a fresh interpreter."""
    body = """
        import gc, weakref
        class Node: pass
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        del a, b
        gc.collect()
        print("cycle collected", alive() is None)
        print(gc.get_freeze_count())
        """
    hot, cold = both(warm, tmp_path, body)
    assert hot.returncode == cold.returncode == 0
    (hot_said, hot_frozen), (cold_said, cold_frozen) = (
        run.stdout.splitlines() for run in (hot, cold)
    )
    assert hot_said == cold_said == "cycle collected True"
    # the one difference: more frozen objects (a fresh 3.12 has a few hundred of its own)
    assert int(hot_frozen) > int(cold_frozen) + 1000
