"""Profile one sync rerank call under cProfile, to explain an overhead row of the table.

    python benchmarks/profile_call.py llama_index          # or: langchain, core, sdk
    python benchmarks/profile_call.py core --docs 1000 --calls 50 --sort tottime

Runs the variant ``--calls`` times against the zero-latency loopback server (after a warm-up)
and prints the top functions. Compare a variant with ``sdk`` to see what the adapter adds.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import API_KEY, MODEL, BenchServer, Corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variant", choices=["sdk", "core", "llama_index", "langchain"])
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--sort", default="cumulative", help="pstats sort key")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    corpus = Corpus(seed=100)
    texts = corpus.passages(args.docs)
    query = corpus.query()
    with BenchServer({"zero": (0.0, max(1024, args.docs))}) as server:
        base_url = server.url("zero")
        call: Any
        if args.variant == "sdk":
            import together

            sdk = together.Together(api_key=API_KEY, base_url=base_url)

            def call() -> Any:
                return sdk.rerank.create(model=MODEL, query=query, documents=texts, top_n=5)

        elif args.variant == "core":
            from together_rerank_plugins import RerankClient

            core = RerankClient(api_key=API_KEY, base_url=base_url)

            def call() -> Any:
                return core.rerank(query, texts, top_n=5)

        elif args.variant == "llama_index":
            from llama_index.core.schema import NodeWithScore, TextNode

            from together_rerank_plugins.llama_index import TogetherRerank as LIRerank

            li = LIRerank(api_key=API_KEY, base_url=base_url, top_n=5)
            nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in texts]

            def call() -> Any:
                return li.postprocess_nodes(nodes, query_str=query)

        else:
            from langchain_core.documents import Document

            from together_rerank_plugins.langchain import TogetherRerank as LCRerank

            lc = LCRerank(api_key=API_KEY, base_url=base_url, top_n=5)
            docs = [Document(page_content=t) for t in texts]

            def call() -> Any:
                return lc.compress_documents(docs, query)

        for _ in range(20):
            call()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.calls):
            call()
        profiler.disable()
    pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
