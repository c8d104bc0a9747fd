"""LangChain document compressor that reranks documents with Together AI.

Example::

    from langchain_classic.retrievers import ContextualCompressionRetriever
    from together_rerank_plugins.langchain import TogetherRerank

    retriever = ContextualCompressionRetriever(
        base_compressor=TogetherRerank(top_n=5), base_retriever=vectorstore.as_retriever(k=20)
    )

This file only translates LangChain objects to core calls and back; configuration, HTTP,
validation and errors live in the core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "together_rerank_plugins.langchain needs langchain-core: run "
        '`pip install "together-rerank-plugins[langchain]"`'
    ) from exc

from pydantic import ConfigDict, Field, SecretStr

from ._errors import RerankInputError
from ._fields import UNSET, RerankFields
from ._planning import RerankResult

__all__ = ["RELEVANCE_SCORE_KEY", "TogetherRerank"]

#: Metadata key of the relevance score on returned documents (as in langchain-cohere).
RELEVANCE_SCORE_KEY = "relevance_score"

RerankInput = str | Document | Mapping[str, Any]


class TogetherRerank(RerankFields, BaseDocumentCompressor):
    """Rerank documents with a Together rerank model (LlamaRank by default); keep ``top_n``.

    Returns copies of the best documents (``Document.model_copy``), so ``id`` and metadata are
    kept and the caller's documents are never modified; each copy carries
    ``metadata["relevance_score"]``.

    Configuration: ``model``, ``top_n`` (default 5; None keeps all), ``api_key`` (alias
    ``together_api_key``), ``base_url``, ``timeout``, ``max_retries``, ``score_threshold``;
    arguments win over the environment (``TOGETHER_API_KEY``, ``TOGETHER_BASE_URL``,
    ``TOGETHER_RERANK_MODEL``). Unknown arguments raise.

    Example (offline, with the embedded test endpoint)::

        >>> from langchain_core.documents import Document
        >>> from together_rerank_plugins.testing import LexicalRerankEndpoint
        >>> rerank = TogetherRerank(top_n=1, api_key="offline", transport=LexicalRerankEndpoint())
        >>> docs = [Document("Berlin is in Germany"), Document("Paris is the capital of France")]
        >>> [d.page_content for d in rerank.compress_documents(docs, "capital of France")]
        ['Paris is the capital of France']
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)

    together_api_key: SecretStr | None = Field(
        default=None,
        alias="api_key",
        exclude=True,
        description="Together API key (default: env TOGETHER_API_KEY). Never serialized.",
    )

    def _secret_key(self) -> Any:
        return self.together_api_key

    # -- translation ---------------------------------------------------------------------
    @staticmethod
    def _payload(documents: Sequence[RerankInput], *, documents_only: bool = False) -> list[Any]:
        out: list[Any] = []
        for i, doc in enumerate(documents):
            if isinstance(doc, Document):
                out.append(doc.page_content)
            elif not documents_only and isinstance(doc, (str, Mapping)):
                out.append(doc)
            else:
                expected = (
                    "LangChain Documents" if documents_only else "Documents, strings or mappings"
                )
                raise RerankInputError(
                    f"documents[{i}] is a {type(doc).__name__}; pass {expected}."
                )
        return out

    @staticmethod
    def _rebuild(documents: Sequence[Document], results: list[RerankResult]) -> list[Document]:
        return [
            documents[r.index].model_copy(
                update={
                    "metadata": {
                        **documents[r.index].metadata,
                        RELEVANCE_SCORE_KEY: r.relevance_score,
                    }
                }
            )
            for r in results
        ]

    # -- public API ----------------------------------------------------------------------
    def rerank(
        self,
        documents: Sequence[RerankInput],
        query: str,
        *,
        top_n: int | None = UNSET,
        rank_fields: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Score documents (Documents, strings or mappings) against ``query``, best first.

        Returns ``[{"index": i, "relevance_score": s}, ...]`` with ``index`` into
        ``documents`` (the shape ``langchain-cohere`` users know). ``top_n`` defaults to the
        instance's; pass ``None`` for all.
        """
        results = self._client.rerank(
            query, self._payload(documents), **self._call_options(top_n, rank_fields)
        )
        return [{"index": r.index, "relevance_score": r.relevance_score} for r in results]

    async def arerank(
        self,
        documents: Sequence[RerankInput],
        query: str,
        *,
        top_n: int | None = UNSET,
        rank_fields: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Async :meth:`rerank` (native: no worker thread)."""
        results = await self._client.arerank(
            query, self._payload(documents), **self._call_options(top_n, rank_fields)
        )
        return [{"index": r.index, "relevance_score": r.relevance_score} for r in results]

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Return copies of the ``top_n`` most relevant documents, best first."""
        payload = self._payload(documents, documents_only=True)
        results = self._client.rerank(query, payload, **self._call_options())
        return self._rebuild(documents, results)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents` (native: no worker thread)."""
        payload = self._payload(documents, documents_only=True)
        results = await self._client.arerank(query, payload, **self._call_options())
        return self._rebuild(documents, results)
