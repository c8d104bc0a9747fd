"""What every benchmark shares: the loopback server process, the workload, timing, rows."""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
API_KEY = "bench-dummy-key"
MODEL = "Salesforce/Llama-Rank-V1"


# -- results ---------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the table. ``ok`` is None for a row that is shown for information only."""

    benchmark: str
    measured: str
    reference: str
    ratio: str
    target: str
    ok: bool | None
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "info" if self.ok is None else ("PASS" if self.ok else "FAIL")


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.0995 else f"{seconds * 1000:.2f} ms"


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """``median [min-max], n`` of a list of seconds."""
    return f"{fmt_s(median(values))} [{fmt_s(min(values))}-{fmt_s(max(values))}], n={len(values)}"


def rotations(names: list[str], rounds: int) -> list[list[str]]:
    """Interleaved order: every round runs every variant, starting at a different one, so
    slow drifts of a noisy machine fall on all variants alike."""
    return [names[r % len(names) :] + names[: r % len(names)] for r in range(rounds)]


# -- the server --------------------------------------------------------------------------------
class BenchServer:
    """The asyncio server of ``_server.py`` in its own process (its own core, its own GIL).

    ``profiles`` maps a name to ``(latency_seconds, max_documents_per_request)``; each gets a
    port. The process ends when this object is closed, or by itself after ``max_seconds``.
    """

    def __init__(self, profiles: dict[str, tuple[float, int]], max_seconds: float = 600) -> None:
        args = [sys.executable, str(HERE / "_server.py"), "--max-seconds", str(max_seconds)]
        for name, (latency, cap) in profiles.items():
            args += ["--profile", f"{name}:{latency}:{cap}"]
        self.profiles = profiles
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise RuntimeError("the benchmark server did not start (see its error above)")
        self.ports: dict[str, int] = json.loads(line)

    def url(self, profile: str) -> str:
        return f"http://127.0.0.1:{self.ports[profile]}"

    def _call(self, profile: str, path: str, method: str) -> dict[str, Any]:
        data = b"{}" if method == "POST" else None
        req = urllib.request.Request(self.url(profile) + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def stats(self, profile: str) -> dict[str, int]:
        return self._call(profile, "/_stats", "GET")

    def reset(self, profile: str) -> None:
        self._call(profile, "/_reset", "POST")

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the server stops on EOF
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the workload ------------------------------------------------------------------------------
class Corpus:
    """Deterministic pseudo-text: passages of ~60 words, and 5-word queries over the same
    vocabulary (so overlap scores vary)."""

    def __init__(self, seed: int = 7, vocabulary: int = 3000) -> None:
        rng = random.Random(seed)
        syllables = ["ka", "lo", "mi", "ren", "tas", "vo", "qui", "dor", "pel", "sun", "ar", "ex"]
        words: set[str] = set()
        while len(words) < vocabulary:
            words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
        self.words = sorted(words)
        self.rng = rng

    def passage(self, n_words: int = 60) -> str:
        words = [self.rng.choice(self.words) for _ in range(n_words)]
        return " ".join(words).capitalize() + "."

    def passages(self, n: int, n_words: int = 60) -> list[str]:
        return [self.passage(n_words) for _ in range(n)]

    def query(self) -> str:
        return " ".join(self.rng.choice(self.words) for _ in range(5)) + "?"


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
