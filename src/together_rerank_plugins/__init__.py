"""Together AI rerank for RAG pipelines: one shared core, a LlamaIndex postprocessor and a
LangChain document compressor.

- :class:`RerankClient` / :class:`RerankResult`: the framework-free core.
- :class:`CircuitBreaker`: fail fast while an endpoint is down (``circuit_breaker=``).
- ``together_rerank_plugins.llama_index.TogetherRerank``: a LlamaIndex node postprocessor.
- ``together_rerank_plugins.langchain.TogetherRerank``: a LangChain document compressor.
- ``together_rerank_plugins.testing``: an embedded endpoint for offline tests.

Importing this package imports neither framework nor the ``together`` SDK.
"""

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
