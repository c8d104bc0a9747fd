"""A fault-injecting rerank server on 127.0.0.1, for the reliability suite (test_faults.py).

:class:`FaultServer` speaks Together's ``POST /v1/rerank`` over real sockets (HTTP/1.1 with
keep-alive, asyncio streams, in a child process) and answers correctly with
:class:`~together_rerank_plugins.testing.LexicalRerankEndpoint`, except that, per request, a
seeded RNG may inject one fault instead:

=========================  =====================================================  ==========
kind                       what the client receives                               SDK retries
=========================  =====================================================  ==========
``429_retry_after_ms``     429, ``retry-after-ms: 5``                             yes (5 ms)
``429_retry_after_0``      429, ``Retry-After: 0`` (the SDK ignores 0: backoff)   yes
``429_bare``               429 without any retry header                           yes
``500`` / ``504``          JSON error body / plain-text body                      yes
``502``                    an HTML body, as a gateway sends                       yes
``503``                    JSON "overloaded", ``retry-after-ms: 5``               yes (5 ms)
``reset``                  the connection is reset (RST, ``SO_LINGER 0``)         yes
``disconnect``             the connection is closed (FIN) without an answer       yes
``cut_transfer``           200 announcing the full length, half the body, closed  yes
``hang``                   the request is read and never answered                 yes, after
                                                                                  `timeout`
``truncated_json``         200 whose JSON body is cut in half (honest length)     no
``bad_index_range``        200, one result's index out of range                   no
``bad_index_duplicate``    200, one result repeated (same index twice)            no
``trickle``                the right answer, one byte every 50 ms (slowloris)     yes, after
                                                                                  `timeout`
``redirect_foreign``       307 to another origin (a second listener)              no
``oversized_int_score``    200, one score an integer of 400 digits                no
``deep_nesting``           200 whose body is 100,000 nested brackets              no
``echoed_key``             200, one score is the request's ``Authorization``      no
                           header (the API key must reach no message or log)
=========================  =====================================================  ==========

Rates are per kind and add up to at most 30% (:data:`MAX_TOTAL_RATE`). A query containing the
word ``inject-<kind>`` gets that fault on every attempt (for focused tests), and one
containing :data:`NO_FAULT` never gets one (for warm-up calls). The server
counts what it injected (:attr:`FaultServer.injected`) and keeps, for each query, the list
of what each attempt got (:meth:`FaultServer.attempts_for`), so a test can predict exactly
what the client must do with each call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx

from together_rerank_plugins.testing import LexicalRerankEndpoint

__all__ = [
    "DEFAULT_RATES",
    "Attempt",
    "FAULT_KINDS",
    "MAX_TOTAL_RATE",
    "NOT_RETRIED",
    "NO_FAULT",
    "OK",
    "RETRIED",
    "FaultServer",
    "force",
]

OK = "ok"
RETRIED = frozenset(
    {
        "429_retry_after_ms",
        "429_retry_after_0",
        "429_bare",
        "500",
        "502",
        "503",
        "504",
        "reset",
        "disconnect",
        "cut_transfer",
        "hang",
    }
)
# -- malformed 200 answers that once escaped as raw errors or leaked the key ---------------
#: answers built from the correct one: an oversized number, a body nested past Python's
#: recursion limit, the request's Authorization header echoed as a score
MALFORMED_200 = frozenset({"oversized_int_score", "deep_nesting", "echoed_key"})
_MALFORMED_200_RATES = {"oversized_int_score": 0.01, "deep_nesting": 0.01, "echoed_key": 0.01}
# -- end of the malformed-200 block -----------------------------------------------------------

NOT_RETRIED = frozenset({"truncated_json", "bad_index_range", "bad_index_duplicate"}) | (
    MALFORMED_200
)

# -- wire faults: a slowloris answer, a cross-origin redirect ------------------------------
#: ``trickle``: a valid 200 answer sent one byte every :data:`TRICKLE_INTERVAL` seconds
#: (headers too): each read gets data long before a read timeout, so only a bound on the
#: whole attempt ends it. ``redirect_foreign``: ``307`` to the second listener
#: (:attr:`FaultServer.foreign_url`, another origin), which counts every connection it gets
#: (:attr:`FaultServer.foreign_contacts`) and would answer with a *wrong* ranking.
TRICKLE_INTERVAL = 0.05
WIRE_RETRIED = frozenset({"trickle"})
WIRE_NOT_RETRIED = frozenset({"redirect_foreign"})
RETRIED = RETRIED | WIRE_RETRIED
NOT_RETRIED = NOT_RETRIED | WIRE_NOT_RETRIED
# -- end of wire faults ---------------------------------------------------------------------

FAULT_KINDS = tuple(sorted(RETRIED | NOT_RETRIED))
MAX_TOTAL_RATE = 0.30

#: 30% of requests in all, spread over every kind.
DEFAULT_RATES: dict[str, float] = {
    "429_retry_after_ms": 0.02,
    "429_retry_after_0": 0.02,
    "429_bare": 0.02,
    "500": 0.02,
    "502": 0.02,
    "503": 0.02,
    "504": 0.01,
    "reset": 0.02,
    "disconnect": 0.02,
    "cut_transfer": 0.02,
    "hang": 0.02,
    "truncated_json": 0.02,
    "bad_index_range": 0.02,
    "bad_index_duplicate": 0.02,
    **_MALFORMED_200_RATES,
}

_FORCE_PREFIX = "inject-"
#: the query word that keeps every fault away from a request
NO_FAULT = "inject-none"


def force(kind: str) -> str:
    """The query word that makes the server inject ``kind`` on every attempt."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}")
    return f"{_FORCE_PREFIX}{kind}"


def _json_error(message: str, type_: str) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": None}}
    ).encode()


_CANNED: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {
    "429_retry_after_ms": (
        429,
        [("content-type", "application/json"), ("retry-after-ms", "5")],
        _json_error("Rate limit exceeded (injected).", "dynamic_request_limited"),
    ),
    "429_retry_after_0": (
        429,
        [("content-type", "application/json"), ("retry-after", "0")],
        _json_error("Rate limit exceeded (injected).", "dynamic_request_limited"),
    ),
    "429_bare": (
        429,
        [("content-type", "application/json")],
        _json_error("Rate limit exceeded (injected).", "dynamic_token_limited"),
    ),
    "500": (
        500,
        [("content-type", "application/json")],
        _json_error("Internal server error (injected).", "server_error"),
    ),
    "502": (
        502,
        [("content-type", "text/html")],
        b"<html><head><title>502 Bad Gateway</title></head>"
        b"<body><center><h1>502 Bad Gateway</h1></center></body></html>",
    ),
    "503": (
        503,
        [("content-type", "application/json"), ("retry-after-ms", "5")],
        _json_error("The server is overloaded (injected).", "service_unavailable"),
    ),
    "504": (504, [("content-type", "text/plain")], b"upstream request timeout"),
}


def _http(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Attempt:
    """One request as the server saw it; times are ``time.monotonic()``."""

    kind: str
    received: float  # the whole request was read
    answered: float | None = None  # the whole answer was written (None: never)
    retry: int | None = None  # the SDK's retry count (``x-stainless-retry-count``)


class _Request:
    def __init__(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes):
        self.method, self.path, self.headers, self.body = method, path, headers, body

    def payload(self) -> dict[str, Any]:
        try:
            payload = json.loads(self.body)
        except ValueError:
            return {}
        return payload if isinstance(payload, dict) else {}


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """One HTTP/1.1 request, or None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    length = int({k.lower(): v for k, v in headers}.get("content-length", "0"))
    body = await reader.readexactly(length)
    return _Request(method, path, headers, body)


class FaultServer:
    """A rerank endpoint on 127.0.0.1 that injects faults at ``rates`` (see module doc).

    It runs in a child process (``python -m tests.faults``): sharing the test's interpreter,
    its GIL and its garbage-collection pauses with 16 busy client threads, an in-process
    server can stall for longer than a short timeout, and clients then time out on good
    answers that were merely late, which makes outcomes unpredictable. :meth:`start` returns
    once it listens; :meth:`stop` closes every connection, ends the process and collects its
    log, after which :attr:`injected`, :attr:`requests`, :meth:`attempts_for` and
    :meth:`timeline_for` answer.
    """

    def __init__(self, rates: Mapping[str, float] | None = None, *, seed: int | str = 0) -> None:
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        total = sum(self.rates.values())
        if any(r < 0 for r in self.rates.values()) or total > MAX_TOTAL_RATE + 1e-9:
            raise ValueError(f"rates must be >= 0 and add up to at most {MAX_TOTAL_RATE}")
        self.seed = seed
        self._process: subprocess.Popen[str] | None = None
        self._port = 0
        self._foreign_port = 0
        self._log: dict[str, Any] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def foreign_url(self) -> str:
        """The other origin that ``redirect_foreign`` points to."""
        return f"http://127.0.0.1:{self._foreign_port}"

    @property
    def foreign_contacts(self) -> int:
        """Connections the other origin accepted (must stay 0: a redirect is refused)."""
        return int(self._collected()["foreign_contacts"])

    def _collected(self) -> dict[str, Any]:
        if self._log is None:
            raise RuntimeError("the server's log is collected by stop(): call it first")
        return self._log

    @property
    def injected(self) -> Counter[str]:
        """Faults injected, by kind."""
        return Counter(self._collected()["injected"])

    @property
    def requests(self) -> int:
        """Requests received (answered, faulted or hung)."""
        return int(self._collected()["requests"])

    def timeline_for(self, query: str) -> list[Attempt]:
        """Each request carrying ``query``: what it got, when it arrived and was answered."""
        return [Attempt(*a) for a in self._collected()["attempts"].get(query, [])]

    def attempts_for(self, query: str) -> list[str]:
        """What each request carrying ``query`` got, in arrival order (``"ok"`` or a kind)."""
        return [a.kind for a in self.timeline_for(query)]

    def start(self) -> str:
        if self._process is not None:
            raise RuntimeError("already started")
        config = json.dumps({"rates": self.rates, "seed": self.seed})
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults", config],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # the ports, once it listens
        ports = line.split()
        if len(ports) != 2 or not all(p.isdigit() for p in ports):
            self.stop()
            raise RuntimeError(f"the fault server did not start (said {line!r})")
        self._port, self._foreign_port = int(ports[0]), int(ports[1])
        return self.base_url

    def stop(self) -> None:
        """Close every connection, end the server process, collect its log (idempotent)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            out, _ = process.communicate("stop\n", timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise RuntimeError("the fault server did not stop") from None
        if process.returncode != 0:
            raise RuntimeError(f"the fault server failed (exit {process.returncode})")
        self._log = json.loads(out.splitlines()[-1]) if out.strip() else None

    def __enter__(self) -> FaultServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server:
    """The server itself, in the child process: asyncio streams on one event loop."""

    def __init__(self, rates: Mapping[str, float], seed: int | str) -> None:
        self.rates = dict(rates)
        self.endpoint = LexicalRerankEndpoint()
        self._rng = random.Random(seed)
        self._injected: Counter[str] = Counter()
        self._attempts: dict[str, list[Attempt]] = {}
        self._requests = 0
        self._conns: set[asyncio.Task[None]] = set()
        self._port = 0
        self._foreign_port = 0
        self._foreign_contacts = 0

    def log(self) -> dict[str, Any]:
        return {
            "requests": self._requests,
            "foreign_contacts": self._foreign_contacts,
            "injected": dict(self._injected),
            "attempts": {
                q: [[a.kind, a.received, a.answered, a.retry] for a in attempts]
                for q, attempts in self._attempts.items()
            },
        }

    async def serve(self, commands: asyncio.StreamReader) -> None:
        """Listen, print the port, serve until ``stop`` (or EOF) arrives on ``commands``."""
        server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0, backlog=1024)
        self._port = server.sockets[0].getsockname()[1]
        foreign = await asyncio.start_server(self._on_foreign, "127.0.0.1", 0)
        self._foreign_port = foreign.sockets[0].getsockname()[1]
        print(self._port, self._foreign_port, flush=True)
        try:
            await commands.readline()
        finally:
            foreign.close()
            server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await server.wait_closed()

    def _draw(self, query: str | None) -> str:
        words = set((query or "").split())
        if NO_FAULT in words:
            return OK
        for kind in FAULT_KINDS:
            if force(kind) in words:
                return kind
        u = self._rng.random()
        for kind in FAULT_KINDS:
            rate = self.rates.get(kind, 0.0)
            if u < rate:
                return kind
            u -= rate
        return OK

    def _record(self, query: str | None, kind: str, received: float, request: _Request) -> Attempt:
        retry = {k.lower(): v for k, v in request.headers}.get("x-stainless-retry-count", "")
        attempt = Attempt(kind, received, retry=int(retry) if retry.isdigit() else None)
        self._requests += 1
        self._attempts.setdefault(query or "", []).append(attempt)
        if kind != OK:
            self._injected[kind] += 1
        return attempt

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None or not await self._respond(request, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            # stop() cancels live connections; ending normally spares Python 3.11's stream
            # callback from calling .exception() on a cancelled task (it logs an error)
            return
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _respond(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer (or fault) one request; False when the connection must end."""
        received = time.monotonic()
        payload = request.payload()
        query = payload.get("query") if isinstance(payload.get("query"), str) else None
        kind = self._draw(query)
        if kind in WIRE_RETRIED | WIRE_NOT_RETRIED:
            return await self._wire_fault(kind, query, received, request, writer)
        if kind == "hang":
            self._record(query, kind, received, request)
            while await reader.read(65536):  # until the client gives up and closes
                pass
            return False
        if kind == "reset":
            self._record(query, kind, received, request)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if kind == "disconnect":
            self._record(query, kind, received, request)
            return False  # closed (FIN) by the caller without an answer
        if kind in _CANNED:
            attempt = self._record(query, kind, received, request)
            writer.write(_http(*_CANNED[kind]))
            await writer.drain()
            attempt.answered = time.monotonic()
            return True
        answer = self._honest_answer(request)
        body = answer.read()
        if answer.status_code != 200:  # the request itself was wrong: answer it as is
            kind = OK
        elif kind == "truncated_json":
            body = body[: max(1, len(body) // 2)]
        elif kind in ("bad_index_range", "bad_index_duplicate"):
            body = self._corrupt(body, kind, n_docs=len(payload["documents"]))
        elif kind in MALFORMED_200:
            body = self._malformed(body, kind, request.headers)
        attempt = self._record(query, kind, received, request)
        headers = [("content-type", answer.headers.get("content-type", "application/json"))]
        data = _http(answer.status_code, headers, body)
        if kind == "cut_transfer":  # the full length announced, half the body sent, closed
            writer.write(data[: len(data) - len(body) // 2])
            await writer.drain()
            return False
        writer.write(data)
        await writer.drain()
        attempt.answered = time.monotonic()
        return True

    def _honest_answer(self, request: _Request) -> httpx.Response:
        """What the test double answers to this request when nothing goes wrong."""
        return self.endpoint.handle(
            httpx.Request(
                request.method,
                f"http://127.0.0.1:{self._port}{request.path}",
                headers=request.headers,
                content=request.body,
            )
        )

    # -- wire faults ---------------------------------------------------------------------
    async def _wire_fault(
        self,
        kind: str,
        query: str | None,
        received: float,
        request: _Request,
        writer: asyncio.StreamWriter,
    ) -> bool:
        attempt = self._record(query, kind, received, request)
        if kind == "redirect_foreign":
            location = f"http://127.0.0.1:{self._foreign_port}{request.path}"
            writer.write(_http(307, [("location", location)], b""))
            await writer.drain()
            attempt.answered = time.monotonic()
            return True
        # trickle: the right answer, one byte at a time, until the client goes away
        answer = self._honest_answer(request)
        body = answer.read()
        data = _http(answer.status_code, [("content-type", "application/json")], body)
        for i in range(len(data)):
            if writer.is_closing():
                return False
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(TRICKLE_INTERVAL)
        attempt.answered = time.monotonic()
        return True

    async def _on_foreign(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The other origin: counts the contact, answers a wrong ranking, closes."""
        self._foreign_contacts += 1
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            request = await _read_request(reader)
            if request is not None:
                n = len(request.payload().get("documents") or [])
                results = [{"index": i, "relevance_score": 1.0 - i / 100} for i in range(n)]
                body = json.dumps({"object": "rerank", "model": "x", "results": results})
                writer.write(_http(200, [("content-type", "application/json")], body.encode()))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    # -- end of wire faults --------------------------------------------------------------
    def _malformed(self, body: bytes, kind: str, headers: list[tuple[str, str]]) -> bytes:
        """The malformed-200 block's answers (see :data:`MALFORMED_200`)."""
        if kind == "deep_nesting":
            return b"[" * 100_000 + b"]" * 100_000
        payload: dict[str, Any] = json.loads(body)
        victim = payload["results"][self._rng.randrange(len(payload["results"]))]
        if kind == "oversized_int_score":
            # raw JSON: a 400-digit integer (json.dumps would write it too, but keep it plain)
            victim["relevance_score"] = "__HUGE__"
            return json.dumps(payload).encode().replace(b'"__HUGE__"', b"9" * 400)
        auth = {k.lower(): v for k, v in headers}.get("authorization", "")
        victim["relevance_score"] = auth  # echoed_key: "Bearer <the key>"
        return json.dumps(payload).encode()

    def _corrupt(self, body: bytes, kind: str, *, n_docs: int) -> bytes:
        payload: dict[str, Any] = json.loads(body)
        results = payload["results"]
        if kind == "bad_index_range":
            victim = self._rng.randrange(len(results))
            results[victim]["index"] = self._rng.choice([-1, n_docs, n_docs + 7])
        else:
            results.append(dict(results[self._rng.randrange(len(results))]))
        return json.dumps(payload).encode()


async def _child_main(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(commands), sys.stdin
    )
    server = _Server(config["rates"], config["seed"])
    try:
        await server.serve(commands)
    finally:
        transport.close()
    print(json.dumps(server.log()), flush=True)


if __name__ == "__main__":  # the child process started by FaultServer.start()
    asyncio.run(_child_main(json.loads(sys.argv[1])))
