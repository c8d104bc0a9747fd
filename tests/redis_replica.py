"""One replica of a service, for the cross-process shared-cache test and benchmark.

``python -m tests.redis_replica KIND REDIS_URL`` reads ``{"queries": [...], "documents":
[...]}`` on stdin, reranks every query with a :class:`RerankClient` whose score cache is in
that Redis (``KIND``: ``plain`` = :class:`RedisScoreStore`, ``langchain`` = LangChain's
``RedisStore``, ``llama_index`` = LlamaIndex's ``RedisKVStore``), scored by its own embedded
endpoint, and prints one JSON line: what the endpoint received and each ranking.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from typing import Any

from together_rerank_plugins import RedisScoreStore, RerankClient
from together_rerank_plugins.testing import LexicalRerankEndpoint

KINDS = ("plain", "langchain", "llama_index")


def make_store(kind: str, url: str) -> Any:
    """A Redis-backed store of ``kind`` for ``url``, as a user would build it."""
    if kind == "plain":
        return RedisScoreStore.from_url(url, ttl=3600)
    if kind == "langchain":
        with warnings.catch_warnings():  # langchain-community warns that it is sunsetting
            warnings.simplefilter("ignore", DeprecationWarning)
            from langchain_community.storage import RedisStore
        return RedisStore(redis_url=url, ttl=3600)
    if kind == "llama_index":
        from llama_index.storage.kvstore.redis import RedisKVStore

        return RedisKVStore(redis_uri=url)
    raise ValueError(f"unknown store kind {kind!r}; known: {KINDS}")


def run(kind: str, url: str, queries: list[str], documents: list[str]) -> dict[str, Any]:
    endpoint = LexicalRerankEndpoint()
    client = RerankClient(
        api_key="replica-key-0123456789", transport=endpoint, cache=make_store(kind, url)
    )
    rankings, sent, hits = [], 0, 0
    start = time.perf_counter()
    for query in queries:
        results = client.rerank(query, documents, top_n=5)
        rankings.append([[r.index, r.relevance_score] for r in results])
        sent += results.documents_sent
        hits += results.cache_hits
    wall = time.perf_counter() - start
    client.close()
    return {
        "kind": kind,
        "queries": len(queries),
        "documents_sent": sent,
        "cache_hits": hits,
        "requests_received": len(endpoint.requests),
        "documents_received": sum(len(body["documents"]) for body in endpoint.requests),
        "rankings": rankings,
        "wall_s": wall,
    }


if __name__ == "__main__":
    spec = json.loads(sys.stdin.read())
    print(json.dumps(run(sys.argv[1], sys.argv[2], spec["queries"], spec["documents"])))
