"""What an evaluation reads from: the user's retriever (deepened on a copy), the ids and
texts of what it returns, and the reranker's client.

Frameworks are recognised by duck typing and their classes' module names, never imported
here: ``import together_rerank_plugins.evaluation`` imports neither framework.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._client import RerankClient
from .._inputs import structured_document
from ._errors import EvaluationError

__all__ = ["FirstStage", "Items", "Scorer", "adapt_retriever", "ranked_first_stage", "scorer"]


def _from(obj: Any, package: str) -> bool:
    return any(c.__module__.split(".")[0] == package for c in type(obj).__mro__)


# -- the retriever ---------------------------------------------------------------------------
@dataclass
class FirstStage:
    """A retriever as the evaluation calls it: ``retrieve(query id, text)`` -> items."""

    name: str
    call: Callable[[str, str], Any]
    #: how the depth was set (``"similarity_top_k=50 on a copy"``), or None if it could not be
    deepened: str | None
    #: why the depth could not be set, when it could not
    why_not: str | None = None

    async def retrieve(self, qid: str, query: str) -> list[Any]:
        found = self.call(qid, query)
        if inspect.isawaitable(found):
            found = await found
        if isinstance(found, (str, bytes)) or not isinstance(found, Sequence):
            raise EvaluationError(
                f"the retriever returned a {type(found).__name__} for {query!r}; it must "
                "return a list of nodes, documents, ids or (id, text) pairs"
            )
        return list(found)


def _copy_with(obj: Any, attr: str, value: Any) -> Any:
    if callable(getattr(obj, "model_copy", None)):  # pydantic (LangChain retrievers)
        return obj.model_copy(update={attr: value})
    clone = copy.copy(obj)
    setattr(clone, attr, value)
    return clone


def _own(obj: Any, attr: str) -> Any:
    """``obj``'s own attribute ``attr`` (an instance or pydantic field, a property or slot of
    its class), or None: an attribute a wrapper forwards by ``__getattr__`` (LangChain's
    ``RunnableBinding``, a proxy) is the wrapped object's, and setting it on a copy of the
    wrapper changes nothing the wrapper calls."""
    if attr in getattr(obj, "__dict__", {}) or hasattr(type(obj), attr):
        return getattr(obj, attr, None)
    return None


def _deepen(retriever: Any, depth: int) -> tuple[Any, str | None]:
    """A copy of ``retriever`` that returns ``depth`` results, and how; or the retriever and
    None when it exposes no depth."""
    bound = _own(retriever, "bound")
    if bound is not None and callable(getattr(retriever, "model_copy", None)):
        # LangChain's RunnableBinding (with_config, bind, ...): deepen what it wraps
        deep, how = _deepen(bound, depth)
        if how is not None:
            return _copy_with(retriever, "bound", deep), how
        return retriever, None
    kwargs = _own(retriever, "search_kwargs")
    if isinstance(kwargs, Mapping):  # LangChain's VectorStoreRetriever
        new = {**kwargs, "k": depth}
        if "fetch_k" in new or _own(retriever, "search_type") == "mmr":
            new["fetch_k"] = max(int(new.get("fetch_k", 20)), depth)
        return _copy_with(retriever, "search_kwargs", new), f'search_kwargs["k"]={depth}'
    for attr in ("similarity_top_k", "k", "top_k"):
        value = _own(retriever, attr)
        if isinstance(value, int) and not isinstance(value, bool):
            return _copy_with(retriever, attr, depth), f"{attr}={depth}"
    return retriever, None


def adapt_retriever(retriever: Any, depth: int) -> FirstStage:
    """A LlamaIndex ``BaseRetriever``, a LangChain retriever or Runnable, or a callable
    ``query -> list`` (sync or async), deepened to ``depth`` on a copy where it can be."""
    name = type(retriever).__name__
    llama_index = _from(retriever, "llama_index") and callable(
        getattr(retriever, "aretrieve", None)
    )
    if llama_index or callable(getattr(retriever, "ainvoke", None)):  # or a LangChain Runnable
        deep, how = _deepen(retriever, depth)
        method = getattr(deep, "aretrieve" if llama_index else "ainvoke")
        exposes = "similarity_top_k" if llama_index else 'search_kwargs["k"], k or top_k'
        return FirstStage(
            name, lambda _qid, q: method(q), how, None if how else f"{name} exposes no {exposes}"
        )
    if callable(retriever):
        fname = getattr(retriever, "__name__", name)
        return FirstStage(
            fname,
            lambda _qid, q: retriever(q),
            None,
            f"{fname} is a plain function: it returns as many results as it chooses",
        )
    raise EvaluationError(
        f"retriever must be a LlamaIndex retriever, a LangChain retriever (or Runnable), or a "
        f"function query -> list; got {name}"
    )


def ranked_first_stage(name: str, rankings: Mapping[str, Sequence[str]]) -> FirstStage:
    """A first stage whose lists are already known, per query id (BM25, a run file)."""
    return FirstStage(name, lambda qid, _q: list(rankings.get(qid, ())), f"top {name}")


# -- the reranker ----------------------------------------------------------------------------
@dataclass
class Scorer:
    """The client that scores, and how an item becomes what is sent (the adapter's way)."""

    client: RerankClient
    rank_fields: list[str] | None
    node_text: Callable[[Any], str] | None  # the LlamaIndex adapter's own text of a node
    name: str


def scorer(reranker: Any) -> Scorer:
    if isinstance(reranker, RerankClient):
        return Scorer(reranker, None, None, "RerankClient")
    client = getattr(reranker, "client", None)
    if isinstance(client, RerankClient):  # either adapter
        text = getattr(reranker, "_text", None)
        fields = getattr(reranker, "rank_fields", None)
        return Scorer(
            client,
            list(fields) if fields else None,
            text if callable(text) else None,
            f"{type(reranker).__module__.rsplit('.', 1)[-1]}.{type(reranker).__name__}",
        )
    raise EvaluationError(
        "reranker must be a TogetherRerank (LlamaIndex or LangChain) or a RerankClient; got "
        f"{type(reranker).__name__}"
    )


# -- the items a retriever returns -----------------------------------------------------------
IdKey = str | Callable[[Any], Any] | None


def _kind(item: Any) -> str:
    if hasattr(item, "node") and hasattr(item, "score"):
        return "node"  # LlamaIndex NodeWithScore
    if hasattr(item, "page_content") and hasattr(item, "metadata"):
        return "document"  # LangChain Document
    if isinstance(item, Mapping):
        return "mapping"
    if isinstance(item, tuple) and len(item) == 2:
        return "pair"
    if isinstance(item, str):
        return "string"
    return type(item).__name__


def _attr_or_meta(obj: Any, metadata: Mapping[str, Any], key: str) -> Any:
    value = getattr(obj, key, None)
    return metadata.get(key) if value is None else value


#: the ids tried, in order, when ``id_key`` is not given
DEFAULT_KEYS = {
    "node": ("ref_doc_id", "node_id", "id"),
    "document": ("id", "_id", "doc_id"),
    "mapping": ("id", "_id", "doc_id"),
}


class Items:
    """Ids and payloads of retrieved items, for one evaluation."""

    def __init__(self, scorer: Scorer, id_key: IdKey, corpus: Mapping[str, str] | None) -> None:
        if id_key is not None and not (isinstance(id_key, str) or callable(id_key)):
            raise EvaluationError(
                "id_key must be a name (a metadata key or attribute such as 'node_id') or a "
                f"function item -> id; got {type(id_key).__name__}"
            )
        self.scorer = scorer
        self.id_key = id_key
        self.corpus = corpus or {}
        self.chosen: str | None = None  # the default key that matched, when id_key is None

    def candidate_ids(self, item: Any) -> list[tuple[str, str]]:
        """(how, id) pairs this item could be known by: ``id_key``'s, or each default's."""
        key = self.id_key
        if callable(key):
            value = key(item)
            return [] if value is None else [("id_key", str(value))]
        kind = _kind(item)
        if kind == "string":
            return [("the string", item)]
        if kind == "pair":
            return [("the pair's first value", str(item[0]))]
        obj = item.node if kind == "node" else item
        metadata = getattr(obj, "metadata", None) or (item if kind == "mapping" else {})
        names = (key,) if isinstance(key, str) else DEFAULT_KEYS.get(kind, ())
        out = []
        for name in names:
            value = item.get(name) if kind == "mapping" else _attr_or_meta(obj, metadata, name)
            if value is not None and value != "":
                out.append((name, str(value)))
        return out

    def doc_id(self, item: Any) -> str | None:
        found = dict(self.candidate_ids(item))
        if self.chosen is not None:
            return found.get(self.chosen)
        return next(iter(found.values()), None)

    def choose(self, sample: Sequence[Any], judged: set[str]) -> None:
        """Pick the default id that matches the judgments (first of the defaults that does);
        refuse a dataset whose ids match nothing retrieved, showing one id from each side."""
        counts: dict[str, int] = {}
        shown: str | None = None
        for item in sample:
            for how, value in self.candidate_ids(item):
                shown = shown or f"{value!r} ({how})"
                if value in judged:
                    counts[how] = counts.get(how, 0) + 1
        if counts:
            if self.id_key is None:
                self.chosen = max(counts, key=lambda k: counts[k])
            return
        example = next(iter(sorted(judged)), "?")
        if shown is None and self.id_key is not None:
            kinds = sorted({_kind(i) for i in sample})
            raise EvaluationError(
                f"no retrieved item has id_key={self.id_key!r} (retrieved: {', '.join(kinds)}): "
                "name the attribute or metadata key that holds the dataset's ids, or give a "
                "function item -> id"
            )
        if shown is None:
            kinds = sorted({_kind(i) for i in sample}) or ["nothing"]
            raise EvaluationError(
                f"cannot tell the ids of what the retriever returns ({', '.join(kinds)}); pass "
                "id_key= (a metadata key, or a function item -> id)"
            )
        raise EvaluationError(
            f"no retrieved document matches a judged id: the retriever's are like {shown}, the "
            f"dataset's like {example!r}. Pass id_key= naming the field that holds the "
            "dataset's ids (e.g. id_key='doc_id' for metadata['doc_id'])."
        )

    def payload(self, item: Any) -> Any:
        """What the reranker is sent for ``item``, as its adapter would send it."""
        fields = self.scorer.rank_fields
        kind = _kind(item)
        if kind == "node":
            from llama_index.core.schema import MetadataMode

            node = item.node
            if fields:
                return structured_document(
                    fields, node.metadata, node.get_content(MetadataMode.NONE)
                )
            if self.scorer.node_text is not None:
                return self.scorer.node_text(node)
            if type(node).__name__ == "TextNode" and not node.metadata:
                return node.text
            return node.get_content(metadata_mode=MetadataMode.EMBED)
        if kind == "document":
            if fields:
                return structured_document(fields, item.metadata, item.page_content)
            return item.page_content
        if kind == "pair":
            return item[1]
        if kind == "mapping":
            for name in ("text", "page_content", "content"):
                if isinstance(item.get(name), str):
                    return item[name]
        if kind == "string" and item in self.corpus:
            return self.corpus[item]
        if kind == "string":
            return item
        did = self.doc_id(item)
        if did is not None and did in self.corpus:
            return self.corpus[did]
        raise EvaluationError(
            f"cannot tell the text of a retrieved {type(item).__name__}: return nodes, "
            "documents, strings, {'id', 'text'} mappings or (id, text) pairs"
        )
