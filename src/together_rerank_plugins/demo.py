"""The seed workflow, end to end: retrieve 20 candidates, rerank them, keep the best 5.

Run ``python -m together_rerank_plugins.demo``. For each question of a small bundled corpus
(``data/demo_corpus.json``, written for this demo) it retrieves 20 candidates with a
bag-of-words first stage, through LlamaIndex (``VectorStoreIndex`` retriever, then
``TogetherRerank.postprocess_nodes``) and through LangChain (``InMemoryVectorStore``
retriever, then ``TogetherRerank.compress_documents``), and prints the first-stage top 5 next
to the reranked top 5.

Mode: with ``TOGETHER_API_KEY`` set, the rerankers call Together (or the server named by
``TOGETHER_BASE_URL``) with the model from ``TOGETHER_RERANK_MODEL`` (default LlamaRank).
Without it, or with ``--offline``, they call the embedded lexical test endpoint of
:mod:`together_rerank_plugins.testing` in process: no network, and scores that are word
overlap, not LlamaRank's. The first line of output always says which mode ran.

The first stage is deliberately weak (a hashed bag-of-words embedding, the same for both
frameworks and with no model to download), which is what makes the reranker's work visible.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ._client import RerankClient
from ._errors import RerankError
from .cli._common import positive_int

__all__ = [
    "FIRST_STAGE_K",
    "Comparison",
    "Corpus",
    "Hit",
    "Passage",
    "Question",
    "load_corpus",
    "main",
    "run_langchain",
    "run_llama_index",
]

#: How many candidates the first stage hands to the reranker (the guide's "15-25").
FIRST_STAGE_K = 20
#: How many reranked passages are kept, unless ``--top-n`` says otherwise.
DEFAULT_TOP_N = 5

OFFLINE_HEADER = (
    "mode: offline — embedded lexical test endpoint (not LlamaRank; scores are word-overlap, "
    "for demonstration). Set TOGETHER_API_KEY (and TOGETHER_RERANK_MODEL for your dedicated "
    "endpoint) to call Together."
)
#: Offline settings are explicit, so stray TOGETHER_BASE_URL / TOGETHER_RERANK_MODEL values
#: cannot affect an offline run. The transport answers every request; nothing is resolved.
OFFLINE_API_KEY = "offline-demo"
OFFLINE_BASE_URL = "http://embedded-lexical-endpoint.invalid"
OFFLINE_MODEL = "embedded-lexical-overlap"

_TEXT_WIDTH = 60
_TITLE_WIDTH = 26


# -- corpus --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Passage:
    id: str
    topic: str
    title: str
    text: str


@dataclass(frozen=True)
class Question:
    text: str
    answer_id: str
    """The passage written to answer the question (used only for the closing summary)."""


@dataclass(frozen=True)
class Corpus:
    about: str
    passages: tuple[Passage, ...]
    questions: tuple[Question, ...]

    @property
    def topics(self) -> list[str]:
        return sorted({p.topic for p in self.passages})


def load_corpus() -> Corpus:
    """Load the bundled demo corpus (package data ``data/demo_corpus.json``)."""
    raw = (
        resources.files("together_rerank_plugins")
        .joinpath("data", "demo_corpus.json")
        .read_text(encoding="utf-8")
    )
    data = json.loads(raw)
    passages = tuple(
        Passage(id=p["id"], topic=p["topic"], title=p["title"], text=p["text"])
        for p in data["passages"]
    )
    questions = tuple(
        Question(text=q["question"], answer_id=q["answer_id"]) for q in data["questions"]
    )
    return Corpus(about=data["about"], passages=passages, questions=questions)


# -- results -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hit:
    """One ranked passage. ``from_rank`` is its first-stage rank (for reranked hits)."""

    rank: int
    score: float
    passage: Passage
    from_rank: int | None = None


@dataclass(frozen=True)
class Comparison:
    """One question through one framework: the first-stage candidates, then the reranked."""

    framework: str
    question: Question
    candidates: list[Hit]
    reranked: list[Hit]


def _reranked_hits(
    scored_ids: Sequence[tuple[str, float]], candidates: list[Hit], by_id: dict[str, Passage]
) -> list[Hit]:
    first_rank = {h.passage.id: h.rank for h in candidates}
    return [
        Hit(rank=i, score=score, passage=by_id[pid], from_rank=first_rank[pid])
        for i, (pid, score) in enumerate(scored_ids, start=1)
    ]


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


# -- the two pipelines ---------------------------------------------------------------------
def run_llama_index(
    corpus: Corpus,
    questions: Sequence[Question],
    *,
    top_n: int = DEFAULT_TOP_N,
    rerank_kwargs: dict[str, Any] | None = None,
) -> list[Comparison]:
    """Retrieve with a LlamaIndex ``VectorStoreIndex``, rerank with ``TogetherRerank``."""
    from llama_index.core import VectorStoreIndex
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.schema import TextNode

    from .llama_index import TogetherRerank
    from .testing import hash_embedding

    class HashEmbedding(BaseEmbedding):
        """``testing.hash_embedding`` as a LlamaIndex embedding model (offline, no weights)."""

        @classmethod
        def class_name(cls) -> str:
            return "HashEmbedding"

        def _get_query_embedding(self, query: str) -> Embedding:
            return hash_embedding(query)

        async def _aget_query_embedding(self, query: str) -> Embedding:
            return hash_embedding(query)

        def _get_text_embedding(self, text: str) -> Embedding:
            return hash_embedding(text)

    # Metadata stays out of the embedded and reranked text, so both frameworks compare the
    # same passage texts.
    keys = ["id", "topic", "title"]
    nodes = [
        TextNode(
            id_=p.id,
            text=p.text,
            metadata={"id": p.id, "topic": p.topic, "title": p.title},
            excluded_embed_metadata_keys=keys,
            excluded_llm_metadata_keys=keys,
        )
        for p in corpus.passages
    ]
    by_id = {p.id: p for p in corpus.passages}
    index = VectorStoreIndex(nodes=nodes, embed_model=HashEmbedding())
    retriever = index.as_retriever(similarity_top_k=FIRST_STAGE_K)
    rerank = TogetherRerank(top_n=top_n, **(rerank_kwargs or {}))
    out = []
    try:
        for q in questions:
            retrieved = retriever.retrieve(q.text)
            candidates = [
                Hit(rank=i, score=n.score or 0.0, passage=by_id[n.node.node_id])
                for i, n in enumerate(retrieved, start=1)
            ]
            reranked = rerank.postprocess_nodes(retrieved, query_str=q.text)
            scored = [(n.node.node_id, n.score or 0.0) for n in reranked]
            out.append(
                Comparison("LlamaIndex", q, candidates, _reranked_hits(scored, candidates, by_id))
            )
    finally:
        rerank.client.close()
    return out


def run_langchain(
    corpus: Corpus,
    questions: Sequence[Question],
    *,
    top_n: int = DEFAULT_TOP_N,
    rerank_kwargs: dict[str, Any] | None = None,
) -> list[Comparison]:
    """Retrieve with a LangChain ``InMemoryVectorStore``, rerank with ``TogetherRerank``."""
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore

    from .langchain import RELEVANCE_SCORE_KEY, TogetherRerank
    from .testing import hash_embedding

    class HashEmbeddings(Embeddings):
        """``testing.hash_embedding`` as LangChain embeddings (offline, no weights)."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [hash_embedding(t) for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return hash_embedding(text)

    embeddings = HashEmbeddings()
    store = InMemoryVectorStore(embedding=embeddings)
    store.add_documents(
        [
            Document(
                id=p.id,
                page_content=p.text,
                metadata={"id": p.id, "topic": p.topic, "title": p.title},
            )
            for p in corpus.passages
        ]
    )
    by_id = {p.id: p for p in corpus.passages}
    retriever = store.as_retriever(search_kwargs={"k": FIRST_STAGE_K})
    rerank = TogetherRerank(top_n=top_n, **(rerank_kwargs or {}))
    out = []
    try:
        for q in questions:
            docs = retriever.invoke(q.text)
            # The retriever returns documents only; recompute the store's cosine score.
            q_vec = embeddings.embed_query(q.text)
            candidates = [
                Hit(
                    rank=i,
                    score=_cosine(q_vec, embeddings.embed_query(d.page_content)),
                    passage=by_id[d.metadata["id"]],
                )
                for i, d in enumerate(docs, start=1)
            ]
            reranked = rerank.compress_documents(docs, q.text)
            scored = [(d.metadata["id"], float(d.metadata[RELEVANCE_SCORE_KEY])) for d in reranked]
            out.append(
                Comparison("LangChain", q, candidates, _reranked_hits(scored, candidates, by_id))
            )
    finally:
        rerank.client.close()
    return out


@dataclass(frozen=True)
class _Framework:
    name: str
    module: str
    extra: str
    pipeline: str
    run: Callable[..., list[Comparison]]


_FRAMEWORKS = (
    _Framework(
        "LlamaIndex",
        "llama_index.core",
        "llama-index",
        "VectorStoreIndex.as_retriever(similarity_top_k={k}) -> TogetherRerank(top_n={n})"
        ".postprocess_nodes",
        run_llama_index,
    ),
    _Framework(
        "LangChain",
        "langchain_core",
        "langchain",
        "InMemoryVectorStore.as_retriever(k={k}) -> TogetherRerank(top_n={n}).compress_documents",
        run_langchain,
    ),
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package is missing
        return False


# -- printing ------------------------------------------------------------------------------
def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _print_comparison(c: Comparison, number: int, top_n: int) -> None:
    p = print
    p(f"Q{number}. {c.question.text}")
    shown = c.candidates[:top_n]
    p(f"  first stage: top {len(shown)} of {len(c.candidates)} (score = cosine similarity)")
    p(f"     #  score  id    {'title':<{_TITLE_WIDTH}}  text")
    for h in shown:
        p(
            f"    {h.rank:>2}  {h.score:5.3f}  {h.passage.id:<5} "
            f"{_clip(h.passage.title, _TITLE_WIDTH):<{_TITLE_WIDTH}}  "
            f"{_clip(h.passage.text, _TEXT_WIDTH)}"
        )
    rest = c.candidates[top_n:]
    if rest:
        p(f"    ranks {rest[0].rank}-{rest[-1].rank}: " + " ".join(h.passage.id for h in rest))
    p(f"  reranked: top {len(c.reranked)} (score = relevance; from = first-stage rank)")
    p(f"     #  score  from  id    {'title':<{_TITLE_WIDTH}}  text")
    for h in c.reranked:
        p(
            f"    {h.rank:>2}  {h.score:5.3f}  {h.from_rank:>4}  {h.passage.id:<5} "
            f"{_clip(h.passage.title, _TITLE_WIDTH):<{_TITLE_WIDTH}}  "
            f"{_clip(h.passage.text, _TEXT_WIDTH)}"
        )
    p()


def _summary(results: dict[str, list[Comparison]]) -> str:
    changed = []
    answered = []
    for name, comps in results.items():
        n = len(comps)
        differ = sum(
            bool(c.reranked and c.candidates)
            and c.reranked[0].passage.id != c.candidates[0].passage.id
            for c in comps
        )
        before = sum(
            bool(c.candidates) and c.candidates[0].passage.id == c.question.answer_id for c in comps
        )
        after = sum(
            bool(c.reranked) and c.reranked[0].passage.id == c.question.answer_id for c in comps
        )
        changed.append(f"{differ}/{n} ({name})")
        answered.append(f"{before}/{n} -> {after}/{n} ({name})")
    return (
        "summary: top-1 changed by reranking in "
        + ", ".join(changed)
        + " questions; intended answer at top-1 before -> after reranking: "
        + ", ".join(answered)
        + "."
    )


# -- command line --------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m together_rerank_plugins.demo",
        description="Retrieve 20 candidates per question from a small bundled corpus, rerank "
        "them with Together (LlamaRank) through LlamaIndex and LangChain, and compare the top "
        "passages before and after. Live when TOGETHER_API_KEY is set (TOGETHER_RERANK_MODEL, "
        "TOGETHER_BASE_URL are honoured); otherwise offline against an embedded lexical test "
        "endpoint.",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use the embedded lexical test endpoint even if TOGETHER_API_KEY is set",
    )
    parser.add_argument(
        "--questions", type=positive_int, metavar="N", help="run only the first N questions"
    )
    parser.add_argument(
        "--top-n",
        type=positive_int,
        default=DEFAULT_TOP_N,
        metavar="N",
        help=f"how many reranked passages to keep (default {DEFAULT_TOP_N}, "
        f"at most {FIRST_STAGE_K})",
    )
    return parser


def _mode(offline: bool) -> tuple[str, dict[str, Any]]:
    """The first output line and the rerankers' configuration."""
    if not offline and os.environ.get("TOGETHER_API_KEY", "").strip():
        with RerankClient() as client:  # resolves and validates the env configuration
            header = f"mode: live — Together endpoint {client.base_url}, model {client.model}"
        return header, {}
    from .testing import LexicalRerankEndpoint

    return OFFLINE_HEADER, {
        "api_key": OFFLINE_API_KEY,
        "base_url": OFFLINE_BASE_URL,
        "model": OFFLINE_MODEL,
        "model_family": "llama-rank",  # explicit: TOGETHER_RERANK_MODEL_FAMILY is not read
        "transport": LexicalRerankEndpoint(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return the exit code (0, or 1 after a one-line error on stderr)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.top_n > FIRST_STAGE_K:
        parser.error(f"--top-n must be at most {FIRST_STAGE_K} (the first-stage candidates)")
    try:
        corpus = load_corpus()
        questions = corpus.questions[: args.questions]
        header, rerank_kwargs = _mode(args.offline)
        print(header)
        print(
            f"corpus: {len(corpus.passages)} passages on {len(corpus.topics)} topics, written "
            f"for this demo; first stage: top {FIRST_STAGE_K} by a hashed bag-of-words "
            f"embedding; reranked: top {args.top_n}."
        )
        print()
        results: dict[str, list[Comparison]] = {}
        for fw in _FRAMEWORKS:
            if not _installed(fw.module):
                print(
                    f"{fw.name}: skipped, not installed; run "
                    f'`pip install "together-rerank-plugins[{fw.extra}]"` to include it.'
                )
                continue
            print(f"=== {fw.name}: {fw.pipeline.format(k=FIRST_STAGE_K, n=args.top_n)} ===")
            print()
            comps = fw.run(corpus, questions, top_n=args.top_n, rerank_kwargs=rerank_kwargs)
            for number, comp in enumerate(comps, start=1):
                _print_comparison(comp, number, args.top_n)
            results[fw.name] = comps
    except RerankError as exc:
        message = " ".join(str(exc).split())
        print(f"error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    if not results:
        print(
            "error: neither LlamaIndex nor LangChain is installed; run `pip install "
            '"together-rerank-plugins[all]"`.',
            file=sys.stderr,
        )
        return 1
    print(_summary(results))
    return 0


if __name__ == "__main__":
    try:
        exit_code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # output piped into a reader that stopped early, e.g. `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        exit_code = 1
    sys.exit(exit_code)
