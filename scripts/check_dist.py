"""Packaging checks, as a new user would meet the package (run by .ci/run).

    python scripts/check_dist.py build DIR          # sdist + wheel (wheel built from the sdist),
                                                   # licence and metadata checked
    python scripts/check_dist.py sdist-tests DIR --python PY
                                                   # unpack the sdist, `pip install ".[test]"`
                                                   # (not editable) in a fresh venv, run pytest
    python scripts/check_dist.py extras DIR        # each docs page's examples, in a fresh venv
                                                   # holding only what its `pip install` installs

Every step starts from the built files, never from this checkout's ``src/``. Exit status 1 on
the first problem, with what was expected.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from email.parser import Parser
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.docs_examples import (  # noqa: E402  (the repository root, just added)
    PAGES,
    ExampleRedis,
    examples,
    install_command,
    parse_install,
    reader_env,
    run,
    served,
)

NAME = "together_rerank_plugins"


def sh(*args: str | Path, cwd: Path | None = None, log: TextIO | None = None) -> None:
    """Run a command (check=True); with ``log``, its output goes there, not to the terminal."""
    print("+", shlex.join(str(a) for a in args), file=log or sys.stdout, flush=True)
    if log is None:
        subprocess.run([str(a) for a in args], cwd=cwd, check=True)
        return
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True)
    log.write(proc.stdout + proc.stderr)
    proc.check_returncode()


def fail(message: str) -> None:
    print(f"check_dist: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def artefacts(outdir: Path) -> tuple[Path, Path]:
    sdists, wheels = sorted(outdir.glob("*.tar.gz")), sorted(outdir.glob("*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        fail(f"expected one sdist and one wheel in {outdir}, found {sdists + wheels}")
    return sdists[0], wheels[0]


def build(outdir: Path) -> None:
    """Build both (the wheel from the sdist, so the sdist must be complete); check them."""
    outdir.mkdir(parents=True, exist_ok=True)
    for old in [*outdir.glob("*.tar.gz"), *outdir.glob("*.whl")]:
        old.unlink()
    sh(sys.executable, "-m", "build", "--outdir", outdir, ROOT)
    sdist, wheel = artefacts(outdir)
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        lic = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        if not lic or zf.read(lic[0]).decode() != licence:
            fail(f"{wheel.name} carries no LICENSE under .dist-info/licenses/")
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
        for expected in (
            f"{NAME}/py.typed",
            f"{NAME}/testing.py",
            # `together-rerank eval --offline sample` runs from a plain wheel install
            f"{NAME}/data/eval_sample/qrels/test.tsv",
            f"{NAME}/evaluation/__init__.py",
        ):
            if expected not in names:
                fail(f"{wheel.name} lacks {expected}")
    if meta["License-Expression"] != "MIT" or "LICENSE" not in meta.get_all("License-File", []):
        fail(f"wheel metadata: License-Expression {meta['License-Expression']!r}")
    classifiers = meta.get_all("Classifier", [])
    print(f"wheel: Requires-Python {meta['Requires-Python']}; {len(classifiers)} classifiers")

    with tarfile.open(sdist) as tf:
        top = sdist.name.removesuffix(".tar.gz")
        members = set(tf.getnames())
        for expected in (
            "LICENSE",
            "pyproject.toml",
            "README.md",
            "tests/test_docs.py",
            "docs/testing.md",
        ):
            if f"{top}/{expected}" not in members:
                fail(f"{sdist.name} lacks {expected}")
        sdist_licence = tf.extractfile(f"{top}/LICENSE")
        if sdist_licence is None or sdist_licence.read().decode() != licence:
            fail(f"{sdist.name}: LICENSE differs from the repository's")
    print(f"check_dist: built {sdist.name} and {wheel.name}; LICENSE in both")


def uv() -> str | None:
    """uv, when INSTALLER says so or (INSTALLER unset) it is on PATH, as scripts/_venv.sh."""
    choice = os.environ.get("INSTALLER", "")
    if choice not in ("", "pip", "uv"):
        fail(f"INSTALLER={choice}: use pip or uv")
    found = shutil.which("uv")
    if choice == "uv" and found is None:
        fail("INSTALLER=uv, but there is no uv on PATH (pip install uv, or INSTALLER=pip)")
    return None if choice == "pip" else found


def venv(where: Path, python: str, log: TextIO | None = None) -> Path:
    if uv():
        sh(python, "-m", "venv", "--without-pip", where, log=log)
    else:
        sh(python, "-m", "venv", where, log=log)
        sh(where / "bin" / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip", log=log)
    return where / "bin" / "python"


def pip_install(py: Path, *args: str, cwd: Path | None = None, log: TextIO | None = None) -> None:
    """``pip install ARGS`` into the throwaway venv of ``py``: with uv when there is one,
    else with the venv's pip. Bytecode is not compiled at install: each venv runs a few
    processes that import a part of what it holds, and they write it on first import
    (:func:`main` turns bytecode writing on), which costs less than compiling it all."""
    found = uv()
    if found:
        sh(found, "pip", "install", "--quiet", "--python", py, *args, cwd=cwd, log=log)
    else:
        sh(py, "-m", "pip", "install", "--quiet", "--no-compile", *args, cwd=cwd, log=log)


def adopt_bytecode(py: Path) -> int:
    """Give the fresh venv of ``py`` the bytecode that this interpreter's venv has already
    compiled, for each source file that is the very same file in both; return how many.

    uv installs a package by hard-linking the files of its cache, so a dependency's ``x.py``
    is one file (one inode) in every venv that holds that version, and the
    ``__pycache__/x.<tag>.pyc`` compiled for it in one venv is valid in all of them. A fresh
    venv then compiles only what it holds alone (this package's wheel, a package at another
    version), instead of LlamaIndex, LangChain and SciPy again (the first example of each
    venv took 4 to 14 s more than the next). Nothing else changes: the venv still holds only
    what its install line installed (a pyc whose source is absent is never read), and Python
    checks each pyc against its source (mtime and size), recompiling a stale one into a new
    file (the shared one is not written)."""
    probe = (
        "import sys, sysconfig; print(sysconfig.get_paths()['purelib']); "
        "print(sys.implementation.cache_tag)"
    )
    lines = subprocess.check_output([str(py), "-c", probe], text=True).splitlines()
    return share_bytecode(Path(sysconfig.get_paths()["purelib"]), Path(lines[0]), lines[1])


def share_bytecode(source: Path, target: Path, tag: str) -> int:
    """Hard-link into ``target`` each ``__pycache__/*.<tag>.pyc`` of ``source`` whose module
    is the very same file in both (see :func:`adopt_bytecode`); return how many."""
    if source == target:
        return 0
    suffix, linked = f".{tag}.pyc", 0
    for folder, _, files in os.walk(source):
        if not folder.endswith("__pycache__"):
            continue
        here = Path(folder)
        for name in files:
            if not name.endswith(suffix):
                continue
            module = here.parent / (name[: -len(suffix)] + ".py")
            twin = target / module.relative_to(source)
            try:
                if not os.path.samefile(module, twin):
                    continue
                (twin.parent / "__pycache__").mkdir(exist_ok=True)
                os.link(here / name, twin.parent / "__pycache__" / name)
                linked += 1
            except OSError:  # no such source there, already there, another filesystem
                continue
    return linked


def sdist_tests(outdir: Path, python: str, pytest_args: list[str]) -> None:
    """Run the suite from the unpacked sdist against a non-editable install of it."""
    sdist, _ = artefacts(outdir)
    with tempfile.TemporaryDirectory(prefix="sdist-tests-") as tmp:
        with tarfile.open(sdist) as tf:
            tf.extractall(tmp, filter="data")
        src = Path(tmp) / sdist.name.removesuffix(".tar.gz")
        py = venv(Path(tmp) / "venv", python)
        pip_install(py, ".[test]", cwd=src)
        print(f"check_dist: {adopt_bytecode(py)} compiled modules shared with {sys.prefix}")
        # the whole suite must collect (an "import file mismatch" once was a collection
        # error); then run what the arguments name (all of it by default)
        sh(py, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", cwd=src)
        sh(py, "-m", "pytest", "-p", "no:cacheprovider", *pytest_args, cwd=src)
    print(f"check_dist: the suite passed from {sdist.name} ({python})")


def extras(outdir: Path, jobs: int = 2) -> None:
    """Each page's examples, with only what the page's `pip install` line installs.

    One fresh venv per distinct install line; ``jobs`` of them at a time (each mostly waits on
    pip and on one example process at a time), each reporting when it is done.
    """
    _, wheel = artefacts(outdir)
    groups: dict[tuple[frozenset[str], tuple[str, ...]], list[Path]] = {}
    for page in PAGES:
        if not any(not e.skip for e in examples(page)):
            continue
        words = install_command(page)
        if not words:
            fail(f"{page.name} has examples but no `pip install` line")
        extra, others = parse_install(words)
        groups.setdefault((frozenset(extra), tuple(sorted(others))), []).append(page)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="docs-venvs-") as tmp:
        # the longest first (the most examples; a framework extra also runs the demo), so the
        # last one to finish is a short one
        def cost(group: tuple[tuple[frozenset[str], tuple[str, ...]], list[Path]]) -> int:
            (extra, others), pages = group
            runs = sum(1 for page in pages for e in examples(page) if not e.skip)
            return runs + (5 if extra & {"langchain", "llama-index", "all"} and not others else 0)

        ordered = sorted(groups.items(), key=cost, reverse=True)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            done = [
                pool.submit(_extras_group, Path(tmp), wheel, extra, others, pages)
                for (extra, others), pages in ordered
            ]
            for future in done:
                report, failed = future.result()
                print(report, end="", flush=True)
                failures.extend(failed)
    if failures:
        fail("\n\n".join(failures))
    print(f"check_dist: every docs example ran with only its page's install line ({len(groups)})")


def _extras_group(
    tmp: Path, wheel: Path, extra: frozenset[str], others: tuple[str, ...], pages: list[Path]
) -> tuple[str, list[str]]:
    """One install line: a fresh venv with it, then its pages' examples (and the demo)."""
    label = f"[{','.join(sorted(extra))}] {' '.join(others)}".strip()
    where = tmp / label.replace(" ", "_").replace(",", "-")
    report = io.StringIO()
    failures: list[str] = []
    started = time.perf_counter()
    try:
        py = venv(where, sys.executable, report)
        spec = f"{wheel}[{','.join(sorted(extra))}]" if extra else str(wheel)
        pip_install(py, spec, *others, log=report)
    except subprocess.CalledProcessError as exc:
        return report.getvalue(), [f"{label}: {exc}"]
    shared = adopt_bytecode(py)
    took = time.perf_counter() - started
    print(
        f"  {label:24} {'venv and install':36} ok ({took:.1f} s; {shared} compiled modules shared)",
        file=report,
    )
    work = where / "work"
    work.mkdir()
    # each serve command started once, as a reader starts it once and runs the page's blocks
    # (tests/test_docs.py does the same for the suite)
    with contextlib.ExitStack() as servers:
        started_serves: dict[str, dict[str, str]] = {}
        redis = ExampleRedis()  # a real redis-server, for the examples that need one
        servers.callback(redis.close)
        for page in pages:
            for example in examples(page):
                if example.skip:
                    continue
                started = time.perf_counter()
                exported: dict[str, str] = {}
                if example.serve:
                    if example.serve not in started_serves:
                        started_serves[example.serve] = servers.enter_context(
                            served(example.serve, str(py))
                        )
                    exported = started_serves[example.serve]
                if example.redis:
                    redis_env = redis.env()
                    if redis_env is None:
                        print(
                            f"  {label:24} {example.name:36} skipped (no redis-server)", file=report
                        )
                        continue
                    exported = exported | redis_env
                proc = run(example, str(py), work, reader_env(exported))
                took = time.perf_counter() - started
                status = "ok" if proc.returncode == 0 else "FAILED"
                print(f"  {label:24} {example.name:36} {status} ({took:.1f} s)", file=report)
                if proc.returncode:
                    failures.append(f"{example.name} with {label}:\n{proc.stderr[-2000:]}")
    if extra & {"langchain", "llama-index", "all"} and not others:
        demo = subprocess.run(
            [where / "bin" / "together-rerank", "demo", "--offline", "--questions", "1"],
            capture_output=True,
            text=True,
            env=reader_env(),
            timeout=300,
        )
        status = "ok" if demo.returncode == 0 else "FAILED"
        print(f"  {label:24} {'together-rerank demo --offline':36} {status}", file=report)
        if demo.returncode:
            failures.append(f"demo --offline with {label}:\n{demo.stderr[-2000:]}")
    return report.getvalue(), failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["build", "sdist-tests", "extras"])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--python", default=sys.executable, help="for sdist-tests")
    args, pytest_args = parser.parse_known_args()
    # what these venvs' processes import is compiled once and reused (see pip_install)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if args.step == "build":
        build(args.outdir)
    elif args.step == "sdist-tests":
        sdist_tests(args.outdir, args.python, pytest_args)
    else:
        extras(args.outdir)


if __name__ == "__main__":
    main()
