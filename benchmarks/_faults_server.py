"""Loopback rerank servers that fail the ways production endpoints do, for bench_production.

Run as a separate process (``python benchmarks/_faults_server.py``), like ``_server.py``.
One 127.0.0.1 port per kind:

- ``hang``: reads the request and never answers (until the client closes);
- ``trickle``: answers 200 with the right ``content-length``, then sends the body
  ``TRICKLE_BYTES`` at a time every ``TRICKLE_GAP`` seconds: every read gets data well
  within a per-attempt timeout, so only a whole-call deadline bounds it;
- ``503``: answers 503 at once, with no retry header (the SDK backs off and retries);
- ``429``: answers 429 at once with ``Retry-After: 30`` (the SDK waits 30 s per retry);
- ``healthy``: answers correctly at once (``_server.answer``'s word-overlap scores);
- ``slow``: answers as ``healthy`` does, after ``SLOW_DELAY`` seconds (two thirds of
  ``bench_production``'s 0.5 s deadline): a healthy failover endpoint that needs more
  than what a hanging primary leaves of the deadline.

``GET /_stats`` answers ``{"requests": n}`` for that port; ``POST /_reset`` zeroes it.
On start it prints one JSON line ``{"KIND": port, ...}``; it stops when its standard input
closes or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
from typing import Any

from _server import Profile, answer

KINDS = ("hang", "trickle", "503", "429", "healthy", "slow")
SLOW_DELAY = 1 / 3
TRICKLE_BYTES = 16
TRICKLE_GAP = 0.1  # seconds between chunks: a 400-byte answer takes 2.5 s


def _response(status: int, reason: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + body


def _error(status: int, message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "server_error"}}).encode()


class Server:
    def __init__(self) -> None:
        self.requests = dict.fromkeys(KINDS, 0)
        self.scorer = Profile("healthy", 0.0, 1024)

    async def handle(self, kind: str, reader: Any, writer: Any) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                path = [*lines[0].split(" "), "", ""][1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                raw = await reader.readexactly(length) if length else b""
                if path == "/_stats":
                    body = json.dumps({"requests": self.requests[kind]}).encode()
                    writer.write(_response(200, "OK", body))
                elif path == "/_reset":
                    self.requests[kind] = 0
                    writer.write(_response(200, "OK", b"{}"))
                else:
                    self.requests[kind] += 1
                    if not await self.fault(kind, raw, reader, writer):
                        return
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def fault(self, kind: str, raw: bytes, reader: Any, writer: Any) -> bool:
        """Answer one rerank request as ``kind`` does; False when the connection ends."""
        if kind == "hang":
            while await reader.read(65536):  # until the client gives up and closes
                pass
            return False
        if kind == "503":
            writer.write(_response(503, "Service Unavailable", _error(503, "overloaded")))
            return True
        if kind == "429":
            body = _error(429, "rate limited")
            writer.write(_response(429, "Too Many Requests", body, "retry-after: 30\r\n"))
            return True
        status, body = answer(self.scorer, json.loads(raw or b"null"))
        data = _response(status, "OK" if status == 200 else "Bad Request", body)
        if kind == "slow":
            await asyncio.sleep(SLOW_DELAY)
        if kind in ("healthy", "slow"):
            writer.write(data)
            return True
        head_len = len(data) - len(body)  # trickle: headers at once, then the body slowly
        writer.write(data[:head_len])
        for start in range(head_len, len(data), TRICKLE_BYTES):
            await writer.drain()
            await asyncio.sleep(TRICKLE_GAP)
            writer.write(data[start : start + TRICKLE_BYTES])
        return True


async def main_async(max_seconds: float) -> None:
    server = Server()
    ports = {}
    for kind in KINDS:

        def factory(r: Any, w: Any, k: str = kind) -> Any:
            return server.handle(k, r, w)

        srv = await asyncio.start_server(factory, "127.0.0.1", 0, backlog=256)
        ports[kind] = srv.sockets[0].getsockname()[1]
    print(json.dumps(ports), flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def watch_stdin() -> None:
        try:
            while sys.stdin.buffer.read(1):
                pass
        finally:
            loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))

    threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        await asyncio.wait_for(stop, timeout=max_seconds)
    except asyncio.TimeoutError:
        print("faults server: --max-seconds reached, stopping", file=sys.stderr)
    sys.stdout.flush()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-seconds", type=float, default=900.0)
    asyncio.run(main_async(parser.parse_args().max_seconds))


if __name__ == "__main__":
    main()
