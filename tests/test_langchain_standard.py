"""langchain-tests' standard retriever suite, run over a thin retriever wrapping TogetherRerank.

``langchain-tests`` has no document-compressor suite; ``RetrieversIntegrationTests`` over a
retriever that reranks a fixed corpus with :class:`TogetherRerank` (the embedded lexical
endpoint standing in for Together) checks the compressor the way LangChain checks retrievers:
``top_n`` at construction and per call, ``invoke`` and ``ainvoke`` returning Documents.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests
from pydantic import ConfigDict, PrivateAttr

from together_rerank_plugins.langchain import RELEVANCE_SCORE_KEY, TogetherRerank
from together_rerank_plugins.testing import LexicalRerankEndpoint, lexical_scores

from .conftest import TEST_KEY

CORPUS = [
    Document("Paris is the capital of France.", id="fr", metadata={"country": "France"}),
    Document("Berlin is the capital of Germany.", id="de", metadata={"country": "Germany"}),
    Document("Madrid is the capital of Spain.", id="es", metadata={"country": "Spain"}),
    Document("Rome is the capital of Italy.", id="it", metadata={"country": "Italy"}),
    Document("France is famous for cheese and wine.", id="fr2", metadata={"country": "France"}),
    Document("The Eiffel Tower stands in Paris.", id="fr3", metadata={"country": "France"}),
    Document("Lisbon is a city on the Atlantic.", id="pt", metadata={"country": "Portugal"}),
    Document("Bread, cheese and olives make a lunch.", id="food", metadata={}),
]
QUERY = "what is the capital of France"


class RerankedCorpusRetriever(BaseRetriever):
    """Returns the ``top_n`` documents of a fixed corpus, as ranked by :class:`TogetherRerank`.

    ``top_n`` is a constructor field and may be overridden per call
    (``retriever.invoke(query, top_n=3)``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    corpus: list[Document]
    top_n: int = 4
    api_key: str
    transport: Any

    _rerankers: dict[int, TogetherRerank] = PrivateAttr(default_factory=dict)

    def _reranker(self, top_n: int | None) -> TogetherRerank:
        n = self.top_n if top_n is None else top_n
        if n not in self._rerankers:
            self._rerankers[n] = TogetherRerank(
                top_n=n, api_key=self.api_key, transport=self.transport
            )
        return self._rerankers[n]

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        top_n: int | None = None,
    ) -> list[Document]:
        reranker = self._reranker(top_n)
        return list(
            reranker.compress_documents(self.corpus, query, callbacks=run_manager.get_child())
        )

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        top_n: int | None = None,
    ) -> list[Document]:
        reranker = self._reranker(top_n)
        docs = await reranker.acompress_documents(
            self.corpus, query, callbacks=run_manager.get_child()
        )
        return list(docs)


class TestTogetherRerankRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[RerankedCorpusRetriever]:
        return RerankedCorpusRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"corpus": CORPUS, "api_key": TEST_KEY, "transport": LexicalRerankEndpoint()}

    @property
    def retriever_query_example(self) -> str:
        return QUERY

    @property
    def num_results_arg_name(self) -> str:
        return "top_n"


# The standard suite only counts results; these check that the wrapper really reranks.


def _expected(top_n: int) -> list[str | None]:
    texts = [d.page_content for d in CORPUS]
    scores = lexical_scores(QUERY, texts)
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))[:top_n]
    return [CORPUS[i].id for i in order]


def test_wrapper_returns_reranked_corpus_documents() -> None:
    endpoint = LexicalRerankEndpoint()
    retriever = RerankedCorpusRetriever(corpus=CORPUS, api_key=TEST_KEY, transport=endpoint)
    result = retriever.invoke(QUERY, top_n=3)
    assert [d.id for d in result] == _expected(3)
    assert result[0].id == "fr"
    assert endpoint.requests[0]["top_n"] == 3
    assert endpoint.requests[0]["documents"] == [d.page_content for d in CORPUS]
    assert all(RELEVANCE_SCORE_KEY in d.metadata for d in result)
    assert all(RELEVANCE_SCORE_KEY not in d.metadata for d in CORPUS)


async def test_wrapper_ainvoke_matches_invoke() -> None:
    endpoint = LexicalRerankEndpoint()
    retriever = RerankedCorpusRetriever(corpus=CORPUS, api_key=TEST_KEY, transport=endpoint)
    result = await retriever.ainvoke(QUERY)
    assert [d.id for d in result] == _expected(4)
    assert result == retriever.invoke(QUERY)
