"""The demo's corpus and its two pipelines (LlamaIndex and LangChain): retrieve 20
candidates with a hashed bag-of-words first stage, rerank them with ``TogetherRerank``.
``together_rerank_plugins.demo`` prints what they return."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "DEFAULT_TOP_N",
    "FIRST_STAGE_K",
    "Comparison",
    "Corpus",
    "Hit",
    "Passage",
    "Question",
    "load_corpus",
    "run_langchain",
    "run_llama_index",
]

#: How many candidates the first stage hands to the reranker (the guide's "15-25").
FIRST_STAGE_K = 20
#: How many reranked passages are kept, unless ``--top-n`` says otherwise.
DEFAULT_TOP_N = 5


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
