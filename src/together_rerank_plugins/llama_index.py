"""LlamaIndex node postprocessor that reranks retrieved nodes with Together AI.

Example::

    from together_rerank_plugins.llama_index import TogetherRerank

    query_engine = index.as_query_engine(
        similarity_top_k=20, node_postprocessors=[TogetherRerank(top_n=5)]
    )

This file only translates LlamaIndex objects to core calls and back and emits LlamaIndex's
events; configuration, HTTP, validation and errors live in the core.
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.bridge.pydantic import ConfigDict, Field, SecretStr
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import (
        BaseNode,
        MetadataMode,
        NodeWithScore,
        QueryBundle,
        TextNode,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from ._install import install_hint

    raise ImportError(
        "together_rerank_plugins.llama_index needs llama-index-core: run "
        f"{install_hint('llama-index')}"
    ) from exc

from ._errors import RerankInputError
from ._fields import RerankFields
from ._inputs import require_sequence, structured_document
from ._plan import CallPlan
from ._results import FALLBACK_KEY, RELEVANCE_SCORE_KEY, SERVED_BY_KEY, RerankResults

__all__ = [
    "FALLBACK_KEY",
    "RELEVANCE_SCORE_KEY",
    "RETRIEVAL_SCORE_KEY",
    "SERVED_BY_KEY",
    "USAGE_PAYLOAD_KEY",
    "TogetherRerank",
]

dispatcher = get_dispatcher(__name__)

#: Node metadata key that keeps the first-stage (retrieval) score. It is excluded from the
#: text LlamaIndex shows the LLM and the embedder, so it never leaks into a prompt.
RETRIEVAL_SCORE_KEY = "retrieval_score"
#: Key of the token usage (a :class:`together_rerank_plugins.Usage`) in the RERANKING
#: callback event's end payload.
USAGE_PAYLOAD_KEY = "usage"


class TogetherRerank(RerankFields, BaseNodePostprocessor):
    """Rerank nodes with a Together rerank model (LlamaRank by default); keep the best ``top_n``.

    The text sent for each node is ``node.get_content(metadata_mode=metadata_mode)``. The
    returned nodes are new ``NodeWithScore`` objects whose ``score`` is the relevance score;
    the node copies keep their ``id_`` and metadata, plus the same score under
    ``metadata["relevance_score"]`` (the key LangChain documents carry) and the retrieval
    score under ``metadata["retrieval_score"]`` (``None`` when the retriever gave none), both
    excluded from LLM and embedding text. On an ``on_error="fallback"`` answer ``score``
    stays the retrieval score, ``metadata["relevance_score"]`` is ``None`` (nothing was
    scored) and ``metadata["rerank_fallback"]`` is True (excluded too); when a
    ``failover=`` endpoint scored them, ``metadata["rerank_served_by"]`` (excluded too).
    The caller's nodes are never modified.

    Configuration: ``model``, ``top_n`` (default 5; None keeps all), ``api_key``,
    ``base_url``, ``timeout``, ``max_retries``, ``score_threshold``; arguments win over the
    environment (``TOGETHER_API_KEY``, ``TOGETHER_BASE_URL``, ``TOGETHER_RERANK_MODEL``).
    Unknown or misspelled arguments raise instead of being ignored.

    Example (offline, with the embedded test endpoint)::

        >>> from llama_index.core.schema import NodeWithScore, TextNode
        >>> from together_rerank_plugins.testing import LexicalRerankEndpoint
        >>> rerank = TogetherRerank(top_n=1, api_key="offline", transport=LexicalRerankEndpoint())
        >>> nodes = [NodeWithScore(node=TextNode(text=t), score=0.5)
        ...          for t in ["Berlin is in Germany", "Paris is the capital of France"]]
        >>> best = rerank.postprocess_nodes(nodes, query_str="capital of France")
        >>> [n.node.get_content() for n in best]
        ['Paris is the capital of France']
    """

    # defer_build: the validators are built on first construction, not at import;
    # hide_input_in_errors: see the LangChain adapter (the key is in the input)
    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, defer_build=True, hide_input_in_errors=True
    )

    api_key: SecretStr | None = Field(
        default=None,
        exclude=True,
        description="Together API key (default: env TOGETHER_API_KEY). Never serialized.",
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which metadata is sent with each node's text."
    )

    _REPR_EXTRA = ("metadata_mode",)

    def __init__(self, /, **data: Any) -> None:
        # LlamaIndex's model_dump() adds "class_name"; model_validate() of that dump (and
        # from_dict, which drops it itself) must work, another component's must not
        if data.get("class_name") == self.class_name():
            del data["class_name"]
        super().__init__(**data)

    @classmethod
    def class_name(cls) -> str:
        return "TogetherRerank"

    # -- translation ---------------------------------------------------------------------
    def _plan(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> CallPlan:
        """Validate before any event is emitted, so a bad call leaves no Start without End."""
        if query_bundle is None:
            raise RerankInputError(
                "No query: call postprocess_nodes(nodes, query_str=...) or pass a QueryBundle."
            )
        nodes = require_sequence(nodes, "nodes")
        for i, n in enumerate(nodes):
            if not isinstance(n, NodeWithScore):
                raise RerankInputError(
                    f"nodes[{i}] is a {type(n).__name__}; postprocessors take NodeWithScore "
                    "objects: wrap it as NodeWithScore(node=..., score=...)."
                )
        options = self._call_options()
        fields = options["rank_fields"]
        documents: list[Any] = [
            structured_document(fields, n.node.metadata, n.node.get_content(MetadataMode.NONE))
            if fields
            else self._text(n.node)
            for n in nodes
        ]
        return self._client.plan(query_bundle.query_str, documents, **options)

    def _text(self, node: BaseNode) -> str:
        """``node.get_content(metadata_mode)``; a plain TextNode without metadata is its
        text (what get_content returns then, without building an empty metadata string)."""
        if type(node) is TextNode and not node.metadata:
            return node.text
        return node.get_content(metadata_mode=self.metadata_mode)

    @staticmethod
    def _rebuild(nodes: list[NodeWithScore], results: RerankResults) -> list[NodeWithScore]:
        """New NodeWithScores over node copies; extra metadata is kept out of prompts."""
        out = []
        for r in results:
            original = nodes[r.index]
            node = original.node
            # always set (None when the retriever gave no score): code reading the key
            # never meets a KeyError, whichever retriever and whether or not it fell back
            extra = {RETRIEVAL_SCORE_KEY: original.score}
            metadata = results.stamp(node.metadata, r, extra)  # always a copy
            hidden = [k for k in metadata if k not in node.metadata]
            update: dict[str, Any] = {"metadata": metadata}
            if hidden:
                update["excluded_llm_metadata_keys"] = _with(
                    node.excluded_llm_metadata_keys, hidden
                )
                update["excluded_embed_metadata_keys"] = _with(
                    node.excluded_embed_metadata_keys, hidden
                )
            # on fallback there is no rerank score: keep the retrieval score
            score = original.score if results.fallback else r.relevance_score
            out.append(NodeWithScore(node=node.model_copy(update=update), score=score))
        return out

    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> Any:
        top_n = len(nodes) if self.top_n is None else self.top_n
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=top_n, model_name=self._client.model
            )
        )
        return self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self._client.model,
                EventPayload.QUERY_STR: query_bundle.query_str if query_bundle else None,
                EventPayload.TOP_K: top_n,
            },
        )

    def _end(
        self, event: Any, nodes: list[NodeWithScore], results: RerankResults
    ) -> list[NodeWithScore]:
        new_nodes = self._rebuild(nodes, results)
        event.on_end(payload={EventPayload.NODES: new_nodes, USAGE_PAYLOAD_KEY: results.usage})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes

    # -- LlamaIndex hooks ----------------------------------------------------------------
    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        nodes = require_sequence(nodes, "nodes")  # a snapshot: results map onto what was sent
        plan = self._plan(nodes, query_bundle)
        with self._start(nodes, query_bundle) as event:
            return self._end(event, nodes, self._client.execute(plan))

    @dispatcher.span
    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        nodes = require_sequence(nodes, "nodes")  # a snapshot: results map onto what was sent
        plan = self._plan(nodes, query_bundle)
        with self._start(nodes, query_bundle) as event:
            return self._end(event, nodes, await self._client.aexecute(plan))


def _with(keys: list[str], new: list[str]) -> list[str]:
    return [*keys, *(k for k in new if k not in keys)]
