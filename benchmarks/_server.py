"""A small asyncio HTTP/1.1 server that speaks ``POST /v1/rerank``, for the benchmarks.

Run as a separate process (``python benchmarks/_server.py --profile NAME:LATENCY:CAP ...``)
so that its work runs on the other core and never competes with the client under test for
the GIL. It is deliberately cheap per request: one ``json.loads``, a word-overlap score per
document, one ``json.dumps``; latency is an ``asyncio.sleep``, so thousands of requests can
wait at once without a thread each.

Each profile listens on its own 127.0.0.1 port with:

- ``LATENCY`` seconds of added delay before every answer (the "round trip");
- ``CAP`` documents per request at most: a request with more gets the API's 400.

Control endpoints on every port: ``GET /_stats`` (requests, documents received, tokens
billed, peak concurrent requests, rejections) and ``POST /_reset``.

Bounded: at most ``--max-connections`` open connections and ``--max-body`` bytes per body;
the process stops by itself after ``--max-seconds`` or as soon as its standard input closes
(i.e. when the benchmark that started it exits, even if it crashed).

On start it prints one JSON line ``{"PROFILE": port, ...}`` to standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

_WORD = re.compile(r"\w+")


@dataclass
class Stats:
    requests: int = 0
    documents: int = 0
    tokens: int = 0
    rejected: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    connections: int = 0


class Profile:
    def __init__(self, name: str, latency: float, cap: int) -> None:
        self.name = name
        self.latency = latency
        self.cap = cap
        self.stats = Stats()


def _error(status: int, message: str) -> tuple[int, bytes]:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    }
    return status, json.dumps(body).encode()


def answer(profile: Profile, body: Any) -> tuple[int, bytes]:
    """Score one rerank request (validation as the API documents it, minus auth details)."""
    if not isinstance(body, dict):
        return _error(400, "Request body must be a JSON object.")
    query, docs = body.get("query"), body.get("documents")
    if not isinstance(query, str) or not query.strip() or not isinstance(docs, list) or not docs:
        return _error(400, "'query' and a non-empty 'documents' list are required.")
    if len(docs) > profile.cap:
        profile.stats.rejected += 1
        return _error(400, f"Too many documents: {len(docs)} > {profile.cap} per request.")
    texts = [d if isinstance(d, str) else json.dumps(d, sort_keys=True) for d in docs]
    q_words = set(_WORD.findall(query.lower()))
    scores = []
    tokens = 0
    n_query = len(q_words) + 2
    for text in texts:
        words = _WORD.findall(text.lower())
        tokens += n_query + len(words)
        hit = len(q_words.intersection(words))
        scores.append(round(hit / len(q_words), 6) if q_words else 0.0)
    order = sorted(range(len(texts)), key=lambda i: -scores[i])
    top_n = body.get("top_n")
    if isinstance(top_n, int) and top_n > 0:
        order = order[:top_n]
    profile.stats.requests += 1
    profile.stats.documents += len(texts)
    profile.stats.tokens += tokens
    out = {
        "object": "rerank",
        "id": f"bench-{profile.stats.requests}",
        "model": body.get("model"),
        "results": [{"index": i, "relevance_score": scores[i]} for i in order],
        "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens},
    }
    return 200, json.dumps(out).encode()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large"}


class Server:
    def __init__(self, profiles: list[Profile], max_connections: int, max_body: int) -> None:
        self.profiles = profiles
        self.max_connections = max_connections
        self.max_body = max_body
        self.open_connections = 0

    async def handle(
        self, profile: Profile, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.open_connections >= self.max_connections:
            writer.close()
            return
        self.open_connections += 1
        profile.stats.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = [*lines[0].split(" "), "", ""][:3]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length") or 0)
                if length > self.max_body:
                    await self._send(writer, *_error(413, "Body too large."), close=True)
                    return
                raw = await reader.readexactly(length) if length else b""
                close = headers.get("connection", "").lower() == "close"
                status, payload = await self.route(profile, method, path, raw)
                await self._send(writer, status, payload, close=close)
                if close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.open_connections -= 1
            writer.close()

    async def route(
        self, profile: Profile, method: str, path: str, raw: bytes
    ) -> tuple[int, bytes]:
        if path == "/_stats":
            return 200, json.dumps(asdict(profile.stats)).encode()
        if path == "/_reset":
            profile.stats = Stats()
            return 200, b"{}"
        if method != "POST" or path != "/v1/rerank":
            return _error(404, f"No route for {method} {path}")
        stats = profile.stats
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            started = time.perf_counter()
            try:
                body = json.loads(raw)
            except ValueError:
                return _error(400, "Request body is not valid JSON.")
            result = answer(profile, body)
            if profile.latency > 0:  # the latency is the whole round trip, work included
                await asyncio.sleep(max(0.0, profile.latency - (time.perf_counter() - started)))
            return result
        finally:
            stats.in_flight -= 1

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter, status: int, payload: bytes, close: bool = False
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n"
            f"connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + payload)
        await writer.drain()


async def main_async(args: argparse.Namespace) -> None:
    profiles = []
    for spec in args.profile:
        name, latency, cap = spec.split(":")
        profiles.append(Profile(name, float(latency), int(cap)))
    server = Server(profiles, args.max_connections, args.max_body)
    ports = {}
    servers = []
    for profile in profiles:

        def factory(r: asyncio.StreamReader, w: asyncio.StreamWriter, p: Profile = profile) -> Any:
            return server.handle(p, r, w)

        srv = await asyncio.start_server(factory, "127.0.0.1", 0, backlog=1024, limit=args.max_body)
        servers.append(srv)
        ports[profile.name] = srv.sockets[0].getsockname()[1]
    print(json.dumps(ports), flush=True)

    stop = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def watch_stdin() -> None:  # EOF: the parent exited or closed the pipe
        try:
            while sys.stdin.buffer.read(1):
                pass
        finally:
            loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))

    threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        await asyncio.wait_for(stop, timeout=args.max_seconds)
    except asyncio.TimeoutError:
        print("benchmark server: --max-seconds reached, stopping", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no need to wind down open keep-alive connections one by one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--profile",
        action="append",
        required=True,
        help="NAME:LATENCY_SECONDS:MAX_DOCUMENTS_PER_REQUEST (repeatable)",
    )
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--max-connections", type=int, default=1024)
    parser.add_argument("--max-body", type=int, default=32 * 1024 * 1024)
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
