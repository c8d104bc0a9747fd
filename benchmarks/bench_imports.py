"""Import cost: a fresh ``python -c "import X"`` for each adapter against its framework's own
base-class module (what any integration has to import anyway).

Each measurement is a new interpreter (wall clock of the whole process, start-up included),
allowed to use bytecode caches as an installed package would (see ``_env``); the four
commands are interleaved round by round; medians are compared. One extra run of each
with ``-X importtime`` explains the difference: which modules the adapter adds on top of the
framework's, and their self time; it also checks that each adapter loads only its own
framework (the LangChain adapter loads neither LlamaIndex nor the ``together`` SDK, and vice
versa).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

from _harness import Row, fmt_s, median, rotations, spread

PAIRS = [
    ("langchain", "together_rerank_plugins.langchain", "langchain_core.documents.compressor"),
    ("llama_index", "together_rerank_plugins.llama_index", "llama_index.core.postprocessor.types"),
]
TARGET = 1.15


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    # An installed package has its bytecode (pip compiles it); an editable checkout gets it
    # on first import, unless PYTHONDONTWRITEBYTECODE forbids it: then our modules would be
    # compiled from source on every import while the frameworks' are not. Allow it (the
    # .pyc files go to __pycache__/, which git ignores).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    extra = os.environ.get("BENCH_PYTHONPATH")  # set by run.py when running from a clone
    if extra:
        env["PYTHONPATH"] = extra + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _time_import(module: str) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one fresh interpreter importing it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        check=True,
        env=_env(),
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _importtime(module: str) -> dict[str, int]:
    """``{module: self microseconds}`` from ``-X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        check=True,
        env=_env(),
        capture_output=True,
        text=True,
    )
    out: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) == 3:
            out[parts[2].strip()] = int(parts[0].strip())
    return out


def _explain(ours: str, base: str, name: str) -> list[str]:
    a, b = _importtime(ours), _importtime(base)
    added = {m: us for m, us in a.items() if m not in b}
    top = sorted(added.items(), key=lambda kv: -kv[1])[:6]
    forbidden = ["together", "llama_index" if name == "langchain" else "langchain_core"]
    loaded = [f for f in forbidden if f in a]
    notes = [
        f"-X importtime: {len(a)} modules vs {len(b)}; {len(added)} added, "
        f"{sum(added.values()) / 1000:.0f} ms self time; largest: "
        + ", ".join(f"{m} {us / 1000:.1f} ms" for m, us in top),
        "also imported: "
        + (
            ", ".join(loaded)
            if loaded
            else f"neither the `together` SDK nor {forbidden[1]} (only its own framework)"
        ),
    ]
    return notes


def run(rounds: dict[str, int], explain: bool = True) -> list[Row]:
    """``rounds``: measurements per pair (LlamaIndex takes ~3 s per import: fewer rounds)."""
    commands = {
        f"{n}:{which}": mod
        for n, ours, base in PAIRS
        for which, mod in (("ours", ours), ("base", base))
    }
    for key, mod in commands.items():  # warm up: file system cache, and our .pyc files
        if key.endswith(":ours"):
            _time_import(mod)
    times: dict[str, list[float]] = {key: [] for key in commands}
    cpu: dict[str, list[float]] = {key: [] for key in commands}
    for r, order in enumerate(rotations(list(commands), max(rounds.values()))):
        for key in order:
            if r >= rounds[key.split(":")[0]]:
                continue
            wall, used = _time_import(commands[key])
            times[key].append(wall)
            cpu[key].append(used)
    rows = []
    for name, ours, base in PAIRS:
        t_ours, t_base = median(times[f"{name}:ours"]), median(times[f"{name}:base"])
        ratio = t_ours / t_base
        c_ours, c_base = median(cpu[f"{name}:ours"]), median(cpu[f"{name}:base"])
        cpu_note = (
            f"CPU time (user+sys, less sensitive to a busy machine): {fmt_s(c_ours)} vs "
            f"{fmt_s(c_base)}, {c_ours / c_base:.2f}x"
        )
        rows.append(
            Row(
                f"import {ours}",
                spread(times[f"{name}:ours"]),
                f"import {base}: {fmt_s(t_base)}",
                f"{ratio:.2f}x",
                f"<= {TARGET:.2f}x",
                ratio <= TARGET,
                [cpu_note, *(_explain(ours, base, name) if explain else [])],
            )
        )
    return rows
