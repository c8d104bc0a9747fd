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
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "together_rerank_plugins.llama_index needs llama-index-core: run "
        '`pip install "together-rerank-plugins[llama-index]"`'
    ) from exc

from ._errors import RerankInputError
from ._fields import RerankFields
from ._planning import RequestPlan, RerankResult

__all__ = ["RETRIEVAL_SCORE_KEY", "TogetherRerank"]

dispatcher = get_dispatcher(__name__)

#: Node metadata key that keeps the first-stage (retrieval) score. It is excluded from the
#: text LlamaIndex shows the LLM and the embedder, so it never leaks into a prompt.
RETRIEVAL_SCORE_KEY = "retrieval_score"


class TogetherRerank(RerankFields, BaseNodePostprocessor):
    """Rerank nodes with a Together rerank model (LlamaRank by default); keep the best ``top_n``.

    The text sent for each node is ``node.get_content(metadata_mode=metadata_mode)``. The
    returned nodes are new ``NodeWithScore`` objects whose ``score`` is the relevance score;
    the node copies keep their ``id_`` and metadata, plus the retrieval score under
    ``metadata["retrieval_score"]`` (excluded from LLM and embedding text). The caller's
    nodes are never modified.

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

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    api_key: SecretStr | None = Field(
        default=None,
        exclude=True,
        description="Together API key (default: env TOGETHER_API_KEY). Never serialized.",
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which metadata is sent with each node's text."
    )

    def _secret_key(self) -> Any:
        return self.api_key

    @classmethod
    def class_name(cls) -> str:
        return "TogetherRerank"

    # -- translation ---------------------------------------------------------------------
    def _plan(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> RequestPlan:
        """Validate before any event is emitted, so a bad call leaves no Start without End."""
        if query_bundle is None:
            raise RerankInputError(
                "No query: call postprocess_nodes(nodes, query_str=...) or pass a QueryBundle."
            )
        texts = [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]
        return self._client.plan(query_bundle.query_str, texts, **self._call_options())

    @staticmethod
    def _rebuild(nodes: list[NodeWithScore], results: list[RerankResult]) -> list[NodeWithScore]:
        out = []
        for r in results:
            original = nodes[r.index]
            node = original.node
            update: dict[str, Any] = {"metadata": dict(node.metadata)}  # always a copy
            if original.score is not None:
                update["metadata"][RETRIEVAL_SCORE_KEY] = original.score
                update["excluded_llm_metadata_keys"] = _with(
                    node.excluded_llm_metadata_keys, RETRIEVAL_SCORE_KEY
                )
                update["excluded_embed_metadata_keys"] = _with(
                    node.excluded_embed_metadata_keys, RETRIEVAL_SCORE_KEY
                )
            out.append(NodeWithScore(node=node.model_copy(update=update), score=r.relevance_score))
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

    @staticmethod
    def _end(event: Any, new_nodes: list[NodeWithScore]) -> list[NodeWithScore]:
        event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes

    # -- LlamaIndex hooks ----------------------------------------------------------------
    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        plan = self._plan(nodes, query_bundle)
        with self._start(nodes, query_bundle) as event:
            results = self._client.execute(plan)
            return self._end(event, self._rebuild(nodes, results))

    @dispatcher.span
    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        plan = self._plan(nodes, query_bundle)
        with self._start(nodes, query_bundle) as event:
            results = await self._client.aexecute(plan)
            return self._end(event, self._rebuild(nodes, results))


def _with(keys: list[str], key: str) -> list[str]:
    return keys if key in keys else [*keys, key]
