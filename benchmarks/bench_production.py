"""Production resilience: a whole-call deadline, the circuit breaker, failover. Counted and
bounded, side by side in one run.

Against the loopback servers of ``_faults_server.py`` (hanging, trickling, 503, 429 with
``Retry-After: 30``, and a healthy secondary), each scenario makes N sequential calls (100;
20 with ``--quick``) with ``on_error="fallback"``:

- **deadline** (``deadline=0.5``, default ``timeout`` and ``max_retries``): every call
  returns within 0.5 s + 10%; p50, p99 and max per failing server.
- **breaker** (``CircuitBreaker(failure_threshold=5)``): at most 5 calls reach the failing
  server (counted by the server and by the calls that were not refused by the breaker),
  the other calls return in under 5 ms each, and the whole run takes under
  5 x 0.5 s + 1 s. Each failing call is bounded by ``deadline=0.5``. The reference is
  today's cost without a breaker, ``timeout=0.5`` and the
  default 2 retries: measured on 2 calls and multiplied by N (429 with ``Retry-After: 30``
  is not measured: the SDK waits 30 s before each of its 2 retries, 60 s a call).
- **failover** to the healthy secondary (the primary hangs; ``timeout=0.25,
  max_retries=0``): N of N rankings equal the secondary's own ranking, each marked as
  served by it; the added latency (each call minus a direct call to the secondary,
  interleaved) has a p99 under the 0.5 s deadline. With and without a breaker.
- **failover breaker**: the primary hangs (``timeout=0.25, max_retries=0``, a breaker),
  the secondary (its own breaker) is healthy but answers at two thirds of the deadline
  (``slow``), so it is cut short while the primary is still tried. What counts against a
  breaker (docs/production.md): that cut is not the secondary's failure, so once the
  primary's breaker is open the secondary serves every call: N minus the calls before
  the primary's breaker opened, each the secondary's own ranking, within the deadline;
  the secondary's breaker counted no failure.
- **shared pool**: one client (with a breaker) shared by 8 threads; half of the calls
  go through ``with client.with_deadline(0.5) as c:``, which closes the clone at the end
  of each call. No call fails (a clone does not close the pool it shares), every ranking
  is right, the breaker counts nothing.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

from _harness import API_KEY, HERE, Corpus, Row, fmt_s

DEADLINE = 0.5
THRESHOLD = 5
FAILING = ("hang", "trickle", "503", "429")


class FaultsServer:
    """``_faults_server.py`` in its own process; one port per kind."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_faults_server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise RuntimeError("the faults server did not start (see its error above)")
        self.ports: dict[str, int] = json.loads(line)

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.ports[kind]}"

    def _call(self, kind: str, path: str, method: str) -> dict[str, Any]:
        data = b"{}" if method == "POST" else None
        req = urllib.request.Request(self.url(kind) + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def requests(self, kind: str) -> int:
        return int(self._call(kind, "/_stats", "GET")["requests"])

    def reset(self, kind: str) -> None:
        self._call(kind, "/_reset", "POST")

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> FaultsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of a list of seconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def timed_calls(client: Any, queries: list[str], docs: list[str]) -> tuple[list[float], list[Any]]:
    times, results = [], []
    for query in queries:
        start = time.perf_counter()
        results.append(client.rerank(query, docs, top_n=5))
        times.append(time.perf_counter() - start)
    return times, results


def run(quick: bool = False) -> list[Row]:
    n = 20 if quick else 100
    corpus = Corpus(seed=50)
    docs = corpus.passages(20)
    queries = [corpus.query() for _ in range(n)]
    rows: list[Row] = []
    # the fallback and failover WARNINGs go to a handler, as in a service (not to stderr)
    quiet = logging.NullHandler()
    logging.getLogger("together_rerank_plugins").addHandler(quiet)
    try:
        with FaultsServer() as server:
            _warm_up(server, docs)
            rows += _deadline_rows(server, queries, docs)
            rows += _breaker_rows(server, queries, docs)
            rows += _failover_rows(server, queries, docs)
            rows += _failover_breaker_rows(server, queries, docs)
            rows += _shared_pool_rows(server, queries, docs)
    finally:
        logging.getLogger("together_rerank_plugins").removeHandler(quiet)
    return rows


def _warm_up(server: FaultsServer, docs: list[str]) -> None:
    """Import the SDK (half a second, once per process) before anything is timed."""
    from together_rerank_plugins import RerankClient

    with RerankClient(api_key=API_KEY, base_url=server.url("healthy")) as client:
        client.rerank("warm up", docs)


def _deadline_rows(server: FaultsServer, queries: list[str], docs: list[str]) -> list[Row]:
    from together_rerank_plugins import RerankClient

    rows = []
    limit = DEADLINE * 1.1
    for kind in FAILING:
        client = RerankClient(
            api_key=API_KEY,
            base_url=server.url(kind),
            deadline=DEADLINE,
            on_error="fallback",
        )
        times, results = timed_calls(client, queries, docs)
        flagged = sum(r.fallback for r in results)
        rows.append(
            Row(
                f"deadline 0.5 s x{len(queries)}: {kind} server",
                f"p50 {fmt_s(pct(times, 50))}, p99 {fmt_s(pct(times, 99))}, "
                f"max {fmt_s(max(times))}",
                f"limit {fmt_s(limit)}",
                f"{max(times) / DEADLINE:.2f}x",
                "max <= 1.10x",
                max(times) <= limit and flagged == len(queries),
                [f"{kind}: {flagged} of {len(queries)} calls fell back (flagged)"],
            )
        )
        client.close()
    return rows


def _today_per_call(server: FaultsServer, kind: str, docs: list[str]) -> float | None:
    """Today's cost of one call to a failing server, without a breaker: timeout 0.5 s and
    the default 2 retries (3 attempts plus the SDK's backoff); mean of 2 calls."""
    from together_rerank_plugins import RerankClient

    if kind == "429":
        return None  # 2 retries x Retry-After 30 s: 60 s a call, not worth measuring
    client = RerankClient(
        api_key=API_KEY, base_url=server.url(kind), timeout=DEADLINE, on_error="fallback"
    )
    times, _ = timed_calls(client, ["warm query one", "warm query two"], docs)
    client.close()
    return statistics.mean(times)


def _breaker_rows(server: FaultsServer, queries: list[str], docs: list[str]) -> list[Row]:
    from together_rerank_plugins import CircuitBreaker, CircuitOpenError, RerankClient

    n = len(queries)
    how = "deadline=0.5"
    budget = THRESHOLD * DEADLINE + 1.0
    rows = []
    for kind in FAILING:
        server.reset(kind)
        breaker = CircuitBreaker(failure_threshold=THRESHOLD, recovery_time=30.0)
        client = RerankClient(
            api_key=API_KEY,
            base_url=server.url(kind),
            circuit_breaker=breaker,
            on_error="fallback",
            deadline=DEADLINE,
        )
        start = time.perf_counter()
        times, results = timed_calls(client, queries, docs)
        total = time.perf_counter() - start
        client.close()
        reached = server.requests(kind)
        sent_calls = sum(not isinstance(r.error, CircuitOpenError) for r in results)
        refused = [
            t
            for t, r in zip(times, results, strict=True)
            if r.error is not None and isinstance(r.error, CircuitOpenError)
        ]
        slowest_refused = max(refused) if refused else 0.0
        today = _today_per_call(server, kind, docs)
        if today is None:
            reference = f"today: 60 s a call (Retry-After 30 s x 2 retries) x {n} = {60 * n} s"
            ratio = f"{60 * n / total:.0f}x faster"
        else:
            reference = f"today {fmt_s(today)} a call x {n} = {today * n:.0f} s"
            ratio = f"{today * n / total:.0f}x faster"
        ok = (
            sent_calls <= THRESHOLD
            and len(refused) == n - sent_calls
            and slowest_refused < 0.005
            and total < budget
            and all(r.fallback for r in results)
        )
        rows.append(
            Row(
                f"breaker x{n}: {kind} server ({how})",
                f"{sent_calls} calls reached it ({reached} requests); run {fmt_s(total)}; "
                f"other {len(refused)}: max {fmt_s(slowest_refused)}",
                reference,
                ratio,
                f"<= {THRESHOLD} calls; others < 5 ms; run < {budget:.1f} s",
                ok,
                [
                    f"breaker, {kind}: refused calls p50 {fmt_s(pct(refused, 50))}, p99 "
                    f"{fmt_s(pct(refused, 99))}; the {sent_calls} calls sent took "
                    + ", ".join(fmt_s(t) for t in times[:sent_calls])
                ]
                if refused
                else [],
            )
        )
    return rows


def _failover_rows(server: FaultsServer, queries: list[str], docs: list[str]) -> list[Row]:
    from together_rerank_plugins import CircuitBreaker, RerankClient

    n = len(queries)
    direct = RerankClient(api_key=API_KEY, base_url=server.url("healthy"))
    secondary = RerankClient(
        model="acme/secondary", api_key="secondary-dummy-key", base_url=server.url("healthy")
    )
    served_name = f"acme/secondary @ {server.url('healthy')}"
    rows = []
    for label, breaker in (
        ("no breaker", None),
        (f"breaker {THRESHOLD}", CircuitBreaker(failure_threshold=THRESHOLD)),
    ):
        primary = RerankClient(
            api_key=API_KEY,
            base_url=server.url("hang"),
            timeout=DEADLINE / 2,
            max_retries=0,
            circuit_breaker=breaker,
            failover=[secondary],
            on_error="fallback",
        )
        added, correct, marked = [], 0, 0
        for query in queries:  # interleaved: the direct call, then the failover call
            t0 = time.perf_counter()
            expected = direct.rerank(query, docs, top_n=5)
            t1 = time.perf_counter()
            got = primary.rerank(query, docs, top_n=5)
            t2 = time.perf_counter()
            added.append((t2 - t1) - (t1 - t0))
            correct += [r.index for r in got] == [r.index for r in expected] and [
                r.relevance_score for r in got
            ] == [r.relevance_score for r in expected]
            marked += got.failed_over and str(got.served_by) == served_name
        primary.close()
        rows.append(
            Row(
                f"failover x{n} to a healthy secondary ({label})",
                f"{correct}/{n} correct, {marked}/{n} marked; added p50 "
                f"{fmt_s(pct(added, 50))}, p99 {fmt_s(pct(added, 99))}",
                f"deadline {fmt_s(DEADLINE)}; primary timeout {fmt_s(DEADLINE / 2)}",
                f"{pct(added, 99) / DEADLINE:.2f}x",
                "all correct+marked; p99 < 1x",
                correct == n and marked == n and pct(added, 99) < DEADLINE,
            )
        )
    direct.close()
    secondary.close()
    return rows


def _failover_breaker_rows(server: FaultsServer, queries: list[str], docs: list[str]) -> list[Row]:
    from _faults_server import SLOW_DELAY

    from together_rerank_plugins import CircuitBreaker, RerankClient

    n = len(queries)
    direct = RerankClient(api_key=API_KEY, base_url=server.url("healthy"))
    primary_breaker = CircuitBreaker(failure_threshold=THRESHOLD, recovery_time=60.0)
    secondary_breaker = CircuitBreaker(failure_threshold=THRESHOLD, recovery_time=60.0)
    secondary = RerankClient(
        model="acme/secondary",
        api_key="secondary-dummy-key",
        base_url=server.url("slow"),
        circuit_breaker=secondary_breaker,
    )
    primary = RerankClient(
        api_key=API_KEY,
        base_url=server.url("hang"),
        timeout=DEADLINE / 2,
        max_retries=0,
        deadline=DEADLINE,
        circuit_breaker=primary_breaker,
        failover=[secondary],
        on_error="fallback",
    )
    primary.warm_up()
    opened_after: int | None = None
    served_after_open = correct = 0
    times = []
    for i, query in enumerate(queries):
        expected = direct.rerank(query, docs, top_n=5)
        start = time.perf_counter()
        got = primary.rerank(query, docs, top_n=5)
        times.append(time.perf_counter() - start)
        if opened_after is None and primary_breaker.state == "open":
            opened_after = i + 1
            continue  # the call that opened it was still tried on the primary
        if opened_after is not None:
            served_after_open += got.served_by == secondary.endpoint and not got.fallback
            correct += [(r.index, r.relevance_score) for r in got] == [
                (r.index, r.relevance_score) for r in expected
            ]
    for client in (primary, secondary, direct):
        client.close()
    after = n - (opened_after or n)
    ok = (
        opened_after is not None
        and opened_after <= THRESHOLD
        and served_after_open == after
        and correct == after
        and secondary_breaker.state == "closed"
        and secondary_breaker.failures == 0
        and max(times) <= DEADLINE * 1.1
    )
    return [
        Row(
            f"failover breaker x{n}: hanging primary, secondary at 2/3 of the deadline",
            f"primary open after {opened_after} calls; then {served_after_open}/{after} served "
            f"by the secondary ({correct} correct); secondary breaker "
            f"{secondary_breaker.state}, {secondary_breaker.failures} failures; max "
            f"{fmt_s(max(times))}",
            f"every call once the primary is open; deadline {fmt_s(DEADLINE)}, secondary "
            f"answers in {fmt_s(SLOW_DELAY)}",
            f"{served_after_open}/{after}",
            "all served after open; secondary 0 failures; max <= 1.10x deadline",
            ok,
        )
    ]


def _shared_pool_rows(server: FaultsServer, queries: list[str], docs: list[str]) -> list[Row]:
    from concurrent.futures import ThreadPoolExecutor

    from together_rerank_plugins import CircuitBreaker, RerankClient

    n = 2 * len(queries)
    breaker = CircuitBreaker(failure_threshold=THRESHOLD)
    client = RerankClient(api_key=API_KEY, base_url=server.url("healthy"), circuit_breaker=breaker)
    client.warm_up()
    reference = RerankClient(api_key=API_KEY, base_url=server.url("healthy"))
    calls = [(i, queries[i % len(queries)]) for i in range(n)]
    expected = {q: [r.index for r in reference.rerank(q, docs, top_n=5)] for q in set(queries)}
    reference.close()

    def one(call: tuple[int, str]) -> tuple[float, Any]:
        i, query = call
        start = time.perf_counter()
        try:
            if i % 2:
                with client.with_deadline(DEADLINE) as clone:  # closed after each call
                    got: Any = clone.rerank(query, docs, top_n=5)
            else:
                got = client.rerank(query, docs, top_n=5)
        except Exception as exc:  # counted: a failed call is what this row looks for
            got = exc
        return time.perf_counter() - start, got

    with ThreadPoolExecutor(8, thread_name_prefix="bench-shared") as pool:
        outcomes = list(pool.map(one, calls))
    client.close()
    failed = [o for _, o in outcomes if isinstance(o, BaseException) or o.fallback]
    wrong = [
        (i, o)
        for (i, q), (_, o) in zip(calls, outcomes, strict=True)
        if not isinstance(o, BaseException) and [r.index for r in o] != expected[q]
    ]
    times = [t for t, _ in outcomes]
    return [
        Row(
            f"shared pool x{n}: 8 threads, half through a closed with_deadline clone",
            f"{len(failed)} failed, {len(wrong)} wrong; breaker {breaker.state} "
            f"({breaker.failures} failures); p50 {fmt_s(pct(times, 50))}, p99 "
            f"{fmt_s(pct(times, 99))}",
            "no call cut by a clone closing the shared pool",
            f"{n - len(failed) - len(wrong)}/{n}",
            "0 failed, 0 wrong, 0 counted",
            not failed and not wrong and breaker.failures == 0,
            [f"first failure: {failed[0]!r}"] if failed else [],
        )
    ]
