"""Test doubles: an embedded rerank endpoint that speaks Together's ``/v1/rerank`` API.

**Its scores are not LlamaRank's.** :class:`LexicalRerankEndpoint` scores documents with a
simple lexical overlap (IDF-weighted share of the query's words found in the document), so
pipelines can be tested offline and deterministically. It checks requests the way the real
API documents them (bearer key, model, non-empty query, a list of strings or of objects,
``top_n``, ``rank_fields``) and answers in the documented schema, including ``usage``.

Use it in process, as an ``httpx`` transport::

    >>> from together_rerank_plugins import RerankClient
    >>> from together_rerank_plugins.testing import LexicalRerankEndpoint
    >>> endpoint = LexicalRerankEndpoint()
    >>> client = RerankClient(api_key="offline", transport=endpoint)
    >>> [r.index for r in client.rerank("red apples", ["green pears", "red apples"])]
    [1, 0]
    >>> endpoint.requests[0]["documents"]
    ['green pears', 'red apples']

or on a real loopback socket, for anything that only takes a ``base_url``::

    >>> with serve_loopback(endpoint) as base_url:
    ...     client = RerankClient(api_key="offline", base_url=base_url)
    ...     [r.index for r in client.rerank("red apples", ["green pears", "red apples"])]
    [1, 0]

or from a shell, for the docs' examples and anything configured through the environment:
``python -m together_rerank_plugins.testing`` serves it on 127.0.0.1 and prints the
``export TOGETHER_BASE_URL=... TOGETHER_API_KEY=...`` lines that point the package at it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

__all__ = [
    "RERANK_PATH",
    "TEST_ENDPOINT_HEADER",
    "LexicalRerankEndpoint",
    "hash_embedding",
    "lexical_scores",
    "pointwise_lexical_scores",
    "serve_loopback",
]

_WORD = re.compile(r"\w+", re.UNICODE)

#: The one path Together serves rerank on. The client sends ``{base_url}/v1/rerank`` with
#: ``base_url`` written with or without ``/v1`` (``https://api.together.ai``, DMI's
#: ``https://api-inference.together.ai/v1``); any other path gets a 404 here, as there, so a
#: wrong ``base_url`` prefix fails offline too.
RERANK_PATH = "/v1/rerank"
#: Response header by which the embedded endpoint says what it is (value ``lexical``): the
#: CLI and the demo read it to say "test endpoint" rather than "live" when
#: ``TOGETHER_BASE_URL`` points at ``python -m together_rerank_plugins.testing``.
TEST_ENDPOINT_HEADER = "X-Rerank-Test-Endpoint"
TEST_ENDPOINT_NAME = "lexical"


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def hash_embedding(text: str, dim: int = 256) -> list[float]:
    """A deterministic, offline bag-of-words embedding (unit length), for tests and demos.

    Each word is hashed (stable across processes, unlike ``hash()``) into one of ``dim``
    buckets. Texts sharing words get similar vectors: enough for a first-stage retriever
    that a reranker then improves on.
    """
    import hashlib

    vec = [0.0] * dim
    for word in _words(text):
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % dim
        vec[bucket] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    return [v / norm for v in vec] if norm else vec


def lexical_scores(query: str, texts: list[str]) -> list[float]:
    """Score each text in [0, 1]: the IDF-weighted share of the query's words it contains.

    Deterministic and cheap; a stand-in for a cross-encoder, not an imitation of one. The
    IDF is taken over the texts of one request, so unlike LlamaRank's a score depends on the
    other documents sent; for tests that compare scores across batches or with a cache, use
    ``LexicalRerankEndpoint(scorer=pointwise_lexical_scores)``.
    """
    bags = [set(_words(t)) for t in texts]
    q_words = sorted(set(_words(query)))
    if not q_words or not texts:
        return [0.0 for _ in texts]
    n = len(texts)
    idf = {w: math.log(1.0 + (n + 1) / (1 + sum(w in b for b in bags))) for w in q_words}
    total = sum(idf.values())
    scores = []
    for bag in bags:
        hit = sum(idf[w] for w in q_words if w in bag)
        scores.append(round(hit / total, 6))
    return scores


def pointwise_lexical_scores(query: str, texts: list[str]) -> list[float]:
    """Score each text in [0, 1] on its own: the share of the query's words it contains,
    longer words weighing more. Pointwise like LlamaRank, so scores from different requests
    (batches, cached calls) compare.

    >>> pointwise_lexical_scores("red apples", ["red apples", "green apples", "pears"])
    [1.0, 0.5..., 0.0]
    """
    q_words = sorted(set(_words(query)))
    weights = {w: math.log(2.0 + len(w)) for w in q_words}
    total = sum(weights.values())
    if not total:
        return [0.0 for _ in texts]
    return [
        round(sum(weights[w] for w in q_words if w in set(_words(t))) / total, 6) for t in texts
    ]


def _as_text(doc: Any, rank_fields: list[str] | None) -> str:
    if isinstance(doc, str):
        return doc
    keys = rank_fields or sorted(doc)
    return " ".join(str(doc.get(k, "")) for k in keys)


def _error(status: int, message: str, type_: str = "invalid_request_error") -> httpx.Response:
    """An error in Together's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return httpx.Response(
        status, json={"error": {"message": message, "type": type_, "param": None, "code": None}}
    )


class LexicalRerankEndpoint(httpx.MockTransport):
    """An in-process ``POST /v1/rerank`` endpoint with a lexical scorer (see module doc).

    It answers ``POST /v1/rerank`` only (Together's path); any other method or path gets a
    404 in Together's error shape. ``models``: if given, other model names get the API's
    404. ``api_keys``: if given, other bearer keys get 401. Every accepted request body is
    appended to :attr:`requests`. Every response carries ``X-Rerank-Test-Endpoint: lexical``
    (:data:`TEST_ENDPOINT_HEADER`).
    """

    def __init__(
        self,
        *,
        models: Collection[str] | None = None,
        api_keys: Collection[str] | None = None,
        scorer: Callable[[str, list[str]], list[float]] = lexical_scores,
    ) -> None:
        super().__init__(self.handle)
        self.models = set(models) if models is not None else None
        self.api_keys = set(api_keys) if api_keys is not None else None
        self.scorer = scorer
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LexicalRerankEndpoint(models={self.models!r}, requests={len(self.requests)})"

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as the documented API would, saying who answered."""
        response = self._handle(request)
        response.headers[TEST_ENDPOINT_HEADER] = TEST_ENDPOINT_NAME
        return response

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or request.url.path != RERANK_PATH:
            return _error(
                404,
                f"No route for {request.method} {request.url.path}: Together's rerank API is "
                f"POST {RERANK_PATH} (check the path part of base_url).",
                "not_found",
            )
        auth = request.headers.get("authorization", "")
        key = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if not key.strip() or (self.api_keys is not None and key not in self.api_keys):
            return _error(401, "Invalid API key provided.", "authentication_error")
        try:
            body = json.loads(request.read() or b"null")
        except ValueError:
            return _error(400, "Request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "Request body must be a JSON object.")
        problem = self._check(body)
        if problem is not None:
            return problem
        with self._lock:
            self.requests.append(body)
        return httpx.Response(200, json=self._answer(body))

    def _check(self, body: Mapping[str, Any]) -> httpx.Response | None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "'model' is required.")
        if self.models is not None and model not in self.models:
            return _error(
                404,
                f"Unable to access model {model}. Please visit https://api.together.ai "
                "to see the list of supported models or contact the owner to request access.",
                "model_not_found",
            )
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            return _error(400, "'query' must be a non-empty string.")
        docs = body.get("documents")
        if not isinstance(docs, list) or not docs:
            return _error(400, "'documents' must be a non-empty list.")
        if not (all(isinstance(d, str) for d in docs) or all(isinstance(d, dict) for d in docs)):
            return _error(400, "'documents' must be all strings or all objects.")
        top_n = body.get("top_n")
        if top_n is not None and (not isinstance(top_n, int) or top_n < 1):
            return _error(400, "'top_n' must be a positive integer.")
        fields = body.get("rank_fields")
        if fields is not None and not (
            isinstance(fields, list) and all(isinstance(f, str) for f in fields)
        ):
            return _error(400, "'rank_fields' must be a list of strings.")
        return None

    def _answer(self, body: Mapping[str, Any]) -> dict[str, Any]:
        docs = body["documents"]
        fields = body.get("rank_fields")
        texts = [_as_text(d, fields) for d in docs]
        scores = self.scorer(body["query"], texts)
        order = sorted(range(len(docs)), key=lambda i: -scores[i])  # stable: ties keep order
        if body.get("top_n") is not None:
            order = order[: body["top_n"]]
        results: list[dict[str, Any]] = []
        for i in order:
            item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if body.get("return_documents"):
                text = docs[i] if isinstance(docs[i], str) else json.dumps(docs[i])
                item["document"] = {"text": text}
            results.append(item)
        # rough token count: words plus punctuation, like a subword tokenizer would see
        tokens = sum(len(_words(body["query"])) + len(_words(t)) + 2 for t in texts)
        return {
            "object": "rerank",
            "id": f"lexical-{len(self.requests)}",
            "model": body["model"],
            "results": results,
            "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens},
        }


#: set by the handler itself (or meaningless once the body is read whole)
_HOP_HEADERS = frozenset(
    {"content-type", "content-length", "content-encoding", "transfer-encoding", "connection"}
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The status line and headers go out in one write, the body in another: with Nagle's
    # algorithm on, the body waits for the client's delayed ACK of the headers (about
    # 40 ms on Linux) on every answer. A real endpoint answers without that wait.
    disable_nagle_algorithm = True
    endpoint: Callable[[httpx.Request], httpx.Response]

    def _forward(self) -> None:
        """Hand the request to the endpoint as it came (its method included: a GET is no
        rerank call), and send back its answer (no body to a HEAD)."""
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        request = httpx.Request(
            self.command,
            f"http://{self.headers.get('host', 'localhost')}{self.path}",
            headers=list(self.headers.items()),
            content=body,
        )
        response = self.endpoint(request)
        content = response.read()
        self.send_response(response.status_code)
        self.send_header("content-type", response.headers.get("content-type", "application/json"))
        self.send_header("content-length", str(len(content)))
        for name, value in response.headers.items():
            if name.lower() not in _HOP_HEADERS:
                self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    # Every common method reaches the endpoint, which answers POST /v1/rerank only and
    # refuses the rest in Together's error shape (http.server would send its own 501 page).
    do_POST = do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _forward

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default
        return


class _LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up before its answer is written (a probe that reads only the
        # headers, a call cancelled by its deadline) is no server error: say nothing. Any
        # other error is printed as socketserver does.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


@contextlib.contextmanager
def serve_loopback(
    endpoint: Callable[[httpx.Request], httpx.Response] | LexicalRerankEndpoint | None = None,
    *,
    port: int = 0,
) -> Iterator[str]:
    """Serve ``endpoint`` over HTTP on 127.0.0.1 in a background thread; yield its base URL.

    The server stops, and its thread ends, when the ``with`` block exits.
    """
    target = endpoint if endpoint is not None else LexicalRerankEndpoint()
    handler_fn = target.handle if isinstance(target, LexicalRerankEndpoint) else target
    handler = type("Handler", (_Handler,), {"endpoint": staticmethod(handler_fn)})
    server = _LoopbackServer(("127.0.0.1", port), handler)
    # serve_forever's default poll interval (0.5 s) is how long shutdown() can wait for the
    # loop to notice: 50 ms lets a test that starts a server per case exit without the wait.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="rerank-loopback", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


PLACEHOLDER_KEY = "placeholder-key-for-the-test-endpoint"


def main(argv: list[str] | None = None) -> int:
    """Serve the embedded endpoint on 127.0.0.1 and print the ``export`` lines for it.

    ``python -m together_rerank_plugins.testing [--port N] [--seconds S]``: runs until Ctrl-C
    (or for ``S`` seconds). The first lines printed are shell ``export`` lines; paste them
    into the shell that runs your code (the docs' examples use exactly this).
    """
    parser = argparse.ArgumentParser(
        prog="python -m together_rerank_plugins.testing",
        description="Serve the embedded test rerank endpoint (word overlap, not LlamaRank) on "
        "127.0.0.1 and print the export lines that point this package at it.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)"
    )
    args = parser.parse_args(argv)
    with serve_loopback(LexicalRerankEndpoint(), port=args.port) as url:
        print(f"export TOGETHER_BASE_URL={url}")
        print(f"export TOGETHER_API_KEY={PLACEHOLDER_KEY}")
        print(
            "# The embedded test endpoint (word overlap, NOT LlamaRank) is serving on 127.0.0.1."
            "\n# Paste the two lines above into the shell that runs your code; Ctrl-C stops it.",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait(args.seconds)  # None: until interrupted
    return 0


if __name__ == "__main__":
    sys.exit(main())
