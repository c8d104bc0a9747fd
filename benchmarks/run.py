"""Run the benchmark suite: ``python benchmarks/run.py`` (``--quick`` for a smoke run).

Starts a loopback rerank server in a separate process (``_server.py``), runs each section
(``bench_*.py``), prints one table of ratios with pass/fail against their targets,
and (for a full run) rewrites ``docs/performance.md`` with the same table and the machine's
facts. See ``benchmarks/README.md`` and ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SECTIONS = ["cache", "redis", "overhead", "async", "batching", "eval", "imports", "production"]


def _ensure_importable() -> None:
    """Work from a clone where the package is not installed (only its dependencies are)."""
    try:
        import together_rerank_plugins  # noqa: F401
    except ImportError:
        src = str(REPO / "src")
        sys.path.insert(0, src)
        os.environ["BENCH_PYTHONPATH"] = src  # for the import-cost subprocesses
    missing = []
    for module, extra in [
        ("together_rerank_plugins", "."),
        ("together", "."),
        ("llama_index.core", ".[llama-index]"),
        ("langchain_core", ".[langchain]"),
    ]:
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module} ({extra})")
    if missing:
        sys.exit(
            "The benchmarks need the package and both adapters' frameworks; missing: "
            + ", ".join(missing)
            + '. Run `pip install -e ".[all]"` from the repository root.'
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmarks of together-rerank-plugins.")
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run (prints only; timings not judged)"
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}"
    )
    parser.add_argument(
        "--write", action="store_true", help="rewrite the results file even with --quick/--only"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--output", type=Path, default=REPO / "docs" / "performance.md", help="results file"
    )
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    _ensure_importable()
    sys.path.insert(0, str(HERE))
    import bench_async
    import bench_batching
    import bench_cache
    import bench_eval
    import bench_imports
    import bench_overhead
    import bench_production
    import bench_redis_cache
    from _harness import BenchServer, Row
    from _report import machine_facts, table, unjudge_timings, verdict, write_doc

    quick = args.quick
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else ()
    started = time.perf_counter()
    profiles: dict[str, tuple[float, int]] = {}
    for module in (
        bench_async,
        bench_batching,
        bench_cache,
        bench_eval,
        bench_overhead,
        bench_redis_cache,
    ):
        profiles.update(module.profiles())

    rows: list[Row] = []

    def section(name: str, fn: object) -> None:
        if name not in sections:
            return
        t = time.perf_counter()
        print(f"- {name} ...", end="", flush=True)
        rows.extend(fn())  # type: ignore[operator]
        print(f" {time.perf_counter() - t:.0f} s", flush=True)

    print(f"together-rerank-plugins benchmarks ({'quick' if quick else 'full'} run)")
    with BenchServer(profiles) as server:
        section("cache", lambda: bench_cache.run(server))
        section("redis", lambda: bench_redis_cache.run(server))
        section("overhead", lambda: bench_overhead.run(server, 40 if quick else 300))
        section("async", lambda: bench_async.run(server, 1 if quick else 7))
        section("batching", lambda: bench_batching.run(server, 1 if quick else 5))
        section("eval", lambda: bench_eval.run(server, quick))
    section(
        "imports",
        lambda: bench_imports.run(
            {"langchain": 1 if quick else 5, "llama_index": 1 if quick else 3}, explain=not quick
        ),
    )
    section("production", lambda: bench_production.run(quick))
    elapsed = time.perf_counter() - started
    if quick:
        unjudge_timings(rows)

    text, notes = table(rows)
    facts = machine_facts(REPO, load_start, elapsed, quick)
    print()
    print(text)
    print()
    print("\n".join(notes))
    print()
    print("\n".join(facts))
    print()
    print("\n".join(verdict(rows)))
    full = not quick and set(sections) == set(SECTIONS)
    if not args.no_write and (full or args.write):
        passed_argv = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write"]
        write_doc(args.output, rows, facts, passed_argv, elapsed)
        print(f"\nwrote {args.output}")
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
