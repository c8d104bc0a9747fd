"""Together AI rerank for RAG pipelines: one shared core, a LlamaIndex postprocessor and a
LangChain document compressor.

- :class:`RerankClient` / :class:`RerankResult`: the framework-free core.
- :class:`CircuitBreaker`: fail fast while an endpoint is down (``circuit_breaker=``).
- ``together_rerank_plugins.llama_index.TogetherRerank``: a LlamaIndex node postprocessor.
- ``together_rerank_plugins.langchain.TogetherRerank``: a LangChain document compressor.
- ``together_rerank_plugins.testing``: an embedded endpoint for offline tests.

Importing this package imports neither framework nor the ``together`` SDK.
"""

from typing import TYPE_CHECKING

from ._breaker import CircuitBreaker
from ._cache import InMemoryScoreStore, ScoreStore
from ._client import RerankClient
from ._config import DEFAULT_MODEL
from ._errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    CrossOriginRedirectError,
    EndpointNotFoundError,
    MalformedResponseError,
    RateLimitError,
    RerankConfigError,
    RerankConnectionError,
    RerankError,
    RerankInputError,
    RerankTimeoutError,
    ServerError,
)
from ._redis import RedisScoreStore
from ._results import Endpoint, RerankResult, RerankResults, Usage

__version__ = "0.1.0"

#: names that live in an adapter module, imported from there only (so that importing this
#: package never imports a framework)
_ADAPTER_NAMES = {
    "TogetherRerank": (
        "`from together_rerank_plugins.llama_index import TogetherRerank` (a LlamaIndex "
        "node postprocessor) or `from together_rerank_plugins.langchain import "
        "TogetherRerank` (a LangChain document compressor)"
    ),
    "TogetherCrossEncoder": "`from together_rerank_plugins.langchain import TogetherCrossEncoder`",
}


if not TYPE_CHECKING:  # type checkers keep reporting unknown names of this package

    def __getattr__(name: str) -> object:
        """Point at the adapter modules instead of a bare "cannot import name"."""
        where = _ADAPTER_NAMES.get(name)
        if where is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        # an ImportError (not AttributeError): `from ... import` shows this message only then
        raise ImportError(
            f"{name} is not in the together_rerank_plugins package itself, which imports no "
            f"framework: use {where}.",
            name=__name__,
        )


__all__ = [
    "DEFAULT_MODEL",
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "CrossOriginRedirectError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Endpoint",
    "EndpointNotFoundError",
    "MalformedResponseError",
    "RateLimitError",
    "RedisScoreStore",
    "InMemoryScoreStore",
    "RerankClient",
    "RerankConfigError",
    "RerankConnectionError",
    "RerankError",
    "RerankInputError",
    "RerankResult",
    "RerankResults",
    "RerankTimeoutError",
    "ScoreStore",
    "ServerError",
    "Usage",
    "__version__",
]
