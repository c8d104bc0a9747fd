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
from typing import Any, ClassVar

try:
    from langchain_core.callbacks import AsyncCallbackManager, CallbackManager, Callbacks
    from langchain_core.cross_encoders import BaseCrossEncoder
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.load.serializable import Serializable
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from ._install import install_hint

    raise ImportError(
        f"together_rerank_plugins.langchain needs langchain-core: run {install_hint('langchain')}"
    ) from exc

from pydantic import ConfigDict, Field, SecretStr

from ._errors import RerankConfigError, RerankInputError
from ._fields import UNSET, RerankFields
from ._inputs import require_sequence, structured_document
from ._results import FALLBACK_KEY, RELEVANCE_SCORE_KEY, SERVED_BY_KEY, RerankResults

__all__ = [
    "FALLBACK_KEY",
    "RELEVANCE_SCORE_KEY",
    "SERVED_BY_KEY",
    "TogetherCrossEncoder",
    "TogetherRerank",
]

RerankInput = str | Document | Mapping[str, Any]


class _LangChainFields(RerankFields):
    """The shared fields, with the key under LangChain's customary name (alias ``api_key``)
    and LangChain's partner-package conventions: unknown fields are refused."""

    # defer_build: the validators are built on first construction, not at import
    # hide_input_in_errors: a ValidationError (model_validate of a bad configuration) would
    # quote the input, the key among it
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        arbitrary_types_allowed=True,
        defer_build=True,
        hide_input_in_errors=True,
    )

    together_api_key: SecretStr | None = Field(
        default=None,
        alias="api_key",
        exclude=True,
        description="Together API key (default: env TOGETHER_API_KEY). Never serialized.",
    )

    _KEY_FIELD: ClassVar[str] = "together_api_key"


class TogetherRerank(_LangChainFields, BaseDocumentCompressor, Serializable):
    """Rerank documents with a Together rerank model (LlamaRank by default); keep ``top_n``.

    Returns copies of the best documents (``Document.model_copy``), so ``id`` and metadata are
    kept and the caller's documents are never modified; each copy carries
    ``metadata["relevance_score"]`` (``None`` on an ``on_error="fallback"`` answer, which also
    sets ``metadata["rerank_fallback"]``) and, when a ``failover=`` endpoint scored it,
    ``metadata["rerank_served_by"]``.

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

    # restated: Serializable's config (extra="ignore") would otherwise win
    model_config = _LangChainFields.model_config

    # -- LangChain serialization (dumpd / load): the key is a secret reference, never a value
    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["together_rerank_plugins", "langchain"]

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"together_api_key": "TOGETHER_API_KEY"}

    # -- translation ---------------------------------------------------------------------
    def _payload(
        self, documents: Sequence[RerankInput], rank_fields: Any, *, documents_only: bool = False
    ) -> list[Any]:
        out: list[Any] = []
        for i, doc in enumerate(require_sequence(documents)):
            if isinstance(doc, Document):
                if rank_fields:
                    out.append(structured_document(rank_fields, doc.metadata, doc.page_content))
                else:
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
    def _rebuild(documents: Sequence[Document], results: RerankResults) -> list[Document]:
        """Copies (``model_copy``: ``id`` kept) with the score (``None`` on a fallback,
        which also sets the fallback flag): the key is on every returned document."""
        out = []
        for r in results:
            doc = documents[r.index]
            out.append(doc.model_copy(update={"metadata": results.stamp(doc.metadata, r)}))
        return out

    def _run_metadata(self, documents: Sequence[Any]) -> dict[str, Any]:
        return {
            "ls_provider": "together",
            "ls_model_name": self._client.model,
            "top_n": self.top_n,
            "candidates": len(documents),
        }

    _SERIALIZED: ClassVar[dict[str, Any]] = {
        "lc": 1,
        "type": "not_implemented",
        "id": ["together_rerank_plugins", "langchain", "TogetherRerank"],
        "name": "TogetherRerank",
    }

    # -- public API ----------------------------------------------------------------------
    def rerank(
        self,
        documents: Sequence[RerankInput],
        query: str,
        *,
        top_n: int | None = UNSET,
        rank_fields: Sequence[str] | None = UNSET,
    ) -> list[dict[str, Any]]:
        """Score documents (Documents, strings or mappings) against ``query``, best first.

        Returns ``[{"index": i, "relevance_score": s}, ...]`` with ``index`` into
        ``documents`` (the shape ``langchain-cohere`` users know). ``top_n`` and
        ``rank_fields`` default to the instance's; pass ``top_n=None`` for all.
        """
        options = self._call_options(top_n, rank_fields)
        results = self._client.rerank(
            query, self._payload(documents, options["rank_fields"]), **options
        )
        return _as_dicts(results)

    async def arerank(
        self,
        documents: Sequence[RerankInput],
        query: str,
        *,
        top_n: int | None = UNSET,
        rank_fields: Sequence[str] | None = UNSET,
    ) -> list[dict[str, Any]]:
        """Async :meth:`rerank` (native: no worker thread)."""
        options = self._call_options(top_n, rank_fields)
        results = await self._client.arerank(
            query, self._payload(documents, options["rank_fields"]), **options
        )
        return _as_dicts(results)

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Return copies of the ``top_n`` most relevant documents, best first.

        Traced as a retriever-type child run of ``callbacks`` (LangSmith shows the returned
        documents and scores; the token usage is passed to handlers as ``usage=``).
        """
        # a snapshot: results map onto what was sent, even if the caller's list changes
        documents = require_sequence(documents)
        options = self._call_options()
        plan = self._client.plan(
            query, self._payload(documents, options["rank_fields"], documents_only=True), **options
        )
        manager = CallbackManager.configure(
            inheritable_callbacks=callbacks, local_metadata=self._run_metadata(documents)
        )
        run = manager.on_retriever_start(self._SERIALIZED, query, name="TogetherRerank")
        try:
            results = self._client.execute(plan)
        except BaseException as exc:
            run.on_retriever_error(exc)
            raise
        out = self._rebuild(documents, results)
        run.on_retriever_end(out, usage=results.usage)
        return out

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents` (native: no worker thread)."""
        # a snapshot: results map onto what was sent, even if the caller's list changes
        documents = require_sequence(documents)
        options = self._call_options()
        plan = self._client.plan(
            query, self._payload(documents, options["rank_fields"], documents_only=True), **options
        )
        manager = AsyncCallbackManager.configure(
            inheritable_callbacks=callbacks, local_metadata=self._run_metadata(documents)
        )
        run = await manager.on_retriever_start(self._SERIALIZED, query, name="TogetherRerank")
        try:
            results = await self._client.aexecute(plan)
        except BaseException as exc:
            await run.on_retriever_error(exc)
            raise
        out = self._rebuild(documents, results)
        await run.on_retriever_end(out, usage=results.usage)
        return out


class TogetherCrossEncoder(_LangChainFields, BaseCrossEncoder):
    """A LangChain ``BaseCrossEncoder`` backed by Together rerank, for ``CrossEncoderReranker``
    and any other code built on cross-encoders.

    ``score(pairs)`` returns one relevance score per ``(query, document)`` pair, in order.
    Pairs are grouped by query into rerank calls (batched, cached and deduplicated as
    configured), so scoring 20 candidates for one query is one request.

    Example (offline)::

        >>> from together_rerank_plugins.testing import LexicalRerankEndpoint
        >>> encoder = TogetherCrossEncoder(api_key="offline", transport=LexicalRerankEndpoint())
        >>> encoder.score([("red apples", "green pears"), ("red apples", "red apples")])
        [0.0, 1.0]
    """

    top_n: int | None = Field(default=None, description="Unused: every pair gets a score.")

    def _init_client(self, api_key: Any) -> None:
        unused = [
            name
            for name in ("top_n", "score_threshold", "rank_fields")
            if getattr(self, name) is not None
        ]
        if unused or self.on_error != "raise":
            raise RerankConfigError(
                f"TogetherCrossEncoder scores every pair, so {unused or ['on_error']} cannot "
                "apply; set them on CrossEncoderReranker or use TogetherRerank instead."
            )
        super()._init_client(api_key)

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        """Score each ``(query, document)`` pair."""
        scores: list[float] = [0.0] * len(text_pairs)
        for query, positions in _group_by_query(text_pairs).items():
            docs = [text_pairs[i][1] for i in positions]
            for i, score in zip(positions, self._client.score(query, docs), strict=True):
                scores[i] = score
        return scores


def _as_dicts(results: RerankResults) -> list[dict[str, Any]]:
    """langchain-cohere's shape; a fallback answer says so instead of carrying NaN scores."""
    flags = results.call_flags()
    return [{"index": r.index, RELEVANCE_SCORE_KEY: results.relevance(r)} | flags for r in results]


def _group_by_query(pairs: Sequence[tuple[str, str]]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise RerankInputError(f"text_pairs[{i}] must be a (query, document) pair.")
        groups.setdefault(pair[0], []).append(i)
    return groups
