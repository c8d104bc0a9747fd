"""Per-call overrides: ``with_options`` on both adapters, and LangChain's ``rerank(top_n=...)``.

No sockets: the embedded lexical endpoint answers every request.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode

from together_rerank_plugins import RerankClient, RerankConfigError
from together_rerank_plugins.langchain import RELEVANCE_SCORE_KEY
from together_rerank_plugins.langchain import TogetherRerank as LangChainRerank
from together_rerank_plugins.llama_index import TogetherRerank as LlamaIndexRerank
from together_rerank_plugins.testing import LexicalRerankEndpoint, lexical_scores, serve_loopback

from .conftest import TEST_KEY

QUERY = "sweet red apples"
TEXTS = [
    "green pears and yellow bananas",
    "red apples are sweet",
    "red cars are fast",
    "apples and pears in a basket",
    "an apple a day keeps the doctor away",
    "red apples and green apples",
    "nothing relevant here",
    "sweet red fruit",
]
ADAPTERS = [LlamaIndexRerank, LangChainRerank]
ids = pytest.mark.parametrize("adapter", ADAPTERS, ids=["llama_index", "langchain"])


def make(adapter: type, endpoint: LexicalRerankEndpoint, **kwargs: Any) -> Any:
    return adapter(api_key=TEST_KEY, transport=endpoint, **kwargs)


def items(adapter: type) -> list[Any]:
    if adapter is LlamaIndexRerank:
        return [NodeWithScore(node=TextNode(text=t, id_=f"x{i}")) for i, t in enumerate(TEXTS)]
    return [Document(t, id=f"x{i}") for i, t in enumerate(TEXTS)]


def run(rr: Any, objs: list[Any]) -> list[tuple[str, float]]:
    """(id, score) best first, whichever adapter."""
    if isinstance(rr, LlamaIndexRerank):
        out = rr.postprocess_nodes(objs, query_str=QUERY)
        return [(n.node.node_id, n.score) for n in out]
    docs = rr.compress_documents(objs, QUERY)
    return [(d.id, d.metadata[RELEVANCE_SCORE_KEY]) for d in docs]


async def arun(rr: Any, objs: list[Any]) -> list[tuple[str, float]]:
    if isinstance(rr, LlamaIndexRerank):
        out = await rr.apostprocess_nodes(objs, query_str=QUERY)
        return [(n.node.node_id, n.score) for n in out]
    docs = await rr.acompress_documents(objs, QUERY)
    return [(d.id, d.metadata[RELEVANCE_SCORE_KEY]) for d in docs]


def expected(top_n: int | None, threshold: float | None = None) -> list[tuple[str, float]]:
    scores = lexical_scores(QUERY, TEXTS)
    order = sorted(range(len(TEXTS)), key=lambda i: (-scores[i], i))[:top_n]
    return [(f"x{i}", scores[i]) for i in order if threshold is None or scores[i] >= threshold]


@ids
def test_call_options_copy_shares_the_client_and_leaves_the_instance(adapter: type) -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(adapter, endpoint, top_n=5)
    before = shared.model_dump()

    one = shared.with_options(top_n=2)
    some = shared.with_options(top_n=None, score_threshold=0.3)

    assert one is not shared
    assert type(one) is adapter
    assert one.client._sdk is shared.client._sdk  # same connection pool...
    assert some.client._sdk is shared.client._sdk
    assert not one.client._owns_connections  # ...which closing a copy's client leaves open
    assert (one.top_n, some.top_n, some.score_threshold) == (2, None, 0.3)
    assert shared.top_n == 5
    assert shared.score_threshold is None
    assert shared.model_dump() == before

    assert run(one, items(adapter)) == expected(2)
    assert run(some, items(adapter)) == expected(None, threshold=0.3)
    assert run(shared, items(adapter)) == expected(5)
    assert [r.get("top_n") for r in endpoint.requests] == [2, None, 5]


@ids
def test_rank_fields_override_shares_the_client(adapter: type) -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(adapter, endpoint, top_n=1)
    by_title = shared.with_options(rank_fields=["title", "text"])
    assert by_title.client._sdk is shared.client._sdk
    assert shared.rank_fields is None
    if adapter is LlamaIndexRerank:
        objs: list[Any] = [
            NodeWithScore(node=TextNode(text=t, metadata={"title": f"t{i}"}))
            for i, t in enumerate(TEXTS)
        ]
    else:
        objs = [Document(t, metadata={"title": f"t{i}"}) for i, t in enumerate(TEXTS)]
    run(by_title, objs)
    assert endpoint.requests[-1]["rank_fields"] == ["title", "text"]
    assert endpoint.requests[-1]["documents"][0] == {"title": "t0", "text": TEXTS[0]}
    run(shared, objs)
    assert "rank_fields" not in endpoint.requests[-1]


@ids
async def test_concurrent_tasks_with_different_top_n(adapter: type) -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(adapter, endpoint, top_n=3)
    wanted = [1 + (i % len(TEXTS)) for i in range(40)]

    async def one(top_n: int) -> list[tuple[str, float]]:
        return await arun(shared.with_options(top_n=top_n), items(adapter))

    results = await asyncio.gather(*(one(n) for n in wanted))

    assert [len(r) for r in results] == wanted
    assert all(r == expected(n) for r, n in zip(results, wanted, strict=True))
    assert shared.top_n == 3
    assert len(endpoint.requests) == len(wanted)
    # every copy went through the shared client: one async SDK client for this loop
    assert len(shared.client._sdk._async) == 1


@ids
def test_concurrent_threads_with_different_top_n(adapter: type) -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(adapter, endpoint, top_n=3)
    wanted = [1 + (i % len(TEXTS)) for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda n: run(shared.with_options(top_n=n), items(adapter)), wanted)
        )
    assert all(r == expected(n) for r, n in zip(results, wanted, strict=True))
    assert shared.top_n == 3


@ids
def test_other_options_build_a_new_client(adapter: type) -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(adapter, endpoint, top_n=2, timeout=30.0)
    patient = shared.with_options(timeout=120.0, top_n=1)

    assert patient.client is not shared.client
    assert patient.client.timeout == 120.0
    assert shared.client.timeout == 30.0
    assert (patient.top_n, shared.top_n) == (1, 2)
    # everything else is carried over, key and transport included
    assert patient.client.model == shared.client.model
    assert patient.client.base_url == shared.client.base_url
    assert run(patient, items(adapter)) == expected(1)
    assert endpoint.requests[-1]["top_n"] == 1

    other_model = shared.with_options(model="my-org/other-ranker")
    assert other_model.client.model == "my-org/other-ranker"
    assert shared.client.model == "Salesforce/Llama-Rank-V1"


@ids
def test_unknown_or_bad_option_is_a_config_error(adapter: type) -> None:
    shared = make(adapter, LexicalRerankEndpoint())
    with pytest.raises(RerankConfigError, match="topn"):
        shared.with_options(topn=3)
    with pytest.raises(RerankConfigError, match="top_n"):
        shared.with_options(top_n=0)
    with pytest.raises(RerankConfigError):
        shared.with_options(score_threshold=float("nan"))
    assert shared.top_n == 5


async def test_langchain_rerank_top_n_per_call() -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(LangChainRerank, endpoint, top_n=2)

    def pairs(ranking: list[dict[str, Any]]) -> list[tuple[str, float]]:
        return [(f"x{r['index']}", r["relevance_score"]) for r in ranking]

    assert pairs(shared.rerank(TEXTS, QUERY)) == expected(2)
    assert pairs(shared.rerank(TEXTS, QUERY, top_n=4)) == expected(4)
    assert pairs(await shared.arerank(TEXTS, QUERY, top_n=1)) == expected(1)
    assert pairs(shared.rerank(TEXTS, QUERY, top_n=None)) == expected(None)
    assert [r.get("top_n") for r in endpoint.requests] == [2, 4, 1, None]
    assert shared.top_n == 2


def test_with_options_works_inside_a_retriever() -> None:
    """The documented pattern: a per-request retriever over a shared reranker."""
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.retrievers import BaseRetriever

    class Everything(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return items(LangChainRerank)

    endpoint = LexicalRerankEndpoint()
    shared = make(LangChainRerank, endpoint, top_n=5)
    retriever = ContextualCompressionRetriever(
        base_compressor=shared.with_options(top_n=2), base_retriever=Everything()
    )
    out = retriever.invoke(QUERY)
    assert [(d.id, d.metadata[RELEVANCE_SCORE_KEY]) for d in out] == expected(2)
    assert shared.top_n == 5


# -- settings changed in place ------------------------------------------------------------
class Spy:
    """The lexical endpoint, remembering each request's body and headers."""

    def __init__(self) -> None:
        self.endpoint = LexicalRerankEndpoint()
        self.headers: list[dict[str, str]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(dict(request.headers))
        return self.endpoint.handle_request(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    @property
    def body(self) -> dict[str, Any]:
        return self.endpoint.requests[-1]


IN_PLACE: list[tuple[str, Callable[[Any], Any]]] = [
    ("set", lambda m: m.__setitem__("instruction", "new")),
    ("del", lambda m: m.__delitem__("instruction")),
    ("update", lambda m: m.update(instruction="new")),
    ("pop", lambda m: m.pop("instruction")),
    ("setdefault", lambda m: m.setdefault("other", "new")),
    ("clear", lambda m: m.clear()),
    ("nested", lambda m: m["options"].__setitem__("k", 2)),
    ("nested-list", lambda m: m["options"]["tags"].append("new")),
]


@ids
@pytest.mark.parametrize("change", [c for _, c in IN_PLACE], ids=[n for n, _ in IN_PLACE])
def test_extra_body_changed_in_place_is_refused_not_shown_without_being_sent(
    adapter: type, change: Callable[[Any], Any]
) -> None:
    spy = Spy()
    body = {"instruction": "old", "options": {"k": 1, "tags": ["a"]}}
    rerank = adapter(api_key=TEST_KEY, transport=spy.transport, extra_body=body)
    with pytest.raises(TypeError, match="extra_body"):
        change(rerank.extra_body)
    run(rerank, items(adapter))
    assert {k: spy.body[k] for k in body} == body  # what is sent...
    assert rerank.model_dump()["extra_body"] == body  # ...is what is shown
    assert rerank.extra_body == body


@ids
def test_the_callers_own_extra_body_changed_later_changes_neither(adapter: type) -> None:
    spy = Spy()
    options = {"k": 1}
    rerank = adapter(api_key=TEST_KEY, transport=spy.transport, extra_body={"options": options})
    options["k"] = 2  # the caller's dict, not the adapter's
    run(rerank, items(adapter))
    assert spy.body["options"] == {"k": 1}
    assert rerank.extra_body == {"options": {"k": 1}}


@ids
def test_extra_body_assigned_is_applied(adapter: type) -> None:
    spy = Spy()
    rerank = adapter(api_key=TEST_KEY, transport=spy.transport, extra_body={"instruction": "old"})
    rerank.extra_body = {**rerank.extra_body, "instruction": "new"}
    run(rerank, items(adapter))
    assert spy.body["instruction"] == "new"
    assert rerank.model_dump()["extra_body"] == {"instruction": "new"}


@ids
def test_default_headers_changed_in_place_are_refused_and_assigned_ones_applied(
    adapter: type,
) -> None:
    spy = Spy()
    rerank = adapter(api_key=TEST_KEY, transport=spy.transport, default_headers={"X-Route": "a"})
    with pytest.raises(TypeError, match="default_headers"):
        rerank.default_headers["X-Route"] = "b"
    run(rerank, items(adapter))
    assert spy.headers[-1]["x-route"] == "a"
    assert rerank.default_headers == {"X-Route": "a"}
    rerank.default_headers = {"X-Route": "b"}
    run(rerank, items(adapter))
    assert spy.headers[-1]["x-route"] == "b"


@ids
def test_rank_fields_are_not_shared_with_copies_or_the_caller(adapter: type) -> None:
    fields = ["title", "text"]
    rerank = adapter(api_key=TEST_KEY, transport=LexicalRerankEndpoint(), rank_fields=fields)
    copy = rerank.with_options(top_n=1)
    with pytest.raises(TypeError, match="rank_fields"):
        copy.rank_fields.append("author")  # would have changed `rerank` too
    fields.append("author")  # the caller's list
    assert rerank.rank_fields == ["title", "text"]
    assert copy.with_options(rank_fields=fields).rank_fields == ["title", "text", "author"]


@ids
def test_the_failover_list_is_the_one_used(adapter: type) -> None:
    backup = RerankClient(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
    given = [backup]
    rerank = adapter(api_key=TEST_KEY, transport=LexicalRerankEndpoint(), failover=given)
    given.append(backup)  # the caller's list, changed later
    assert list(rerank.failover) == [backup]
    with pytest.raises(TypeError, match="failover"):
        rerank.failover.append(backup)  # would be shown, never tried
    assert rerank.client.failover == (backup,)


@ids
def test_settings_with_read_only_values_still_pickle_copy_and_serialise(
    adapter: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    import copy
    import pickle

    monkeypatch.setenv("TOGETHER_API_KEY", TEST_KEY)  # a pickle never holds the key

    rerank = adapter(
        api_key=TEST_KEY,
        transport=LexicalRerankEndpoint(),
        extra_body={"instruction": "x", "options": {"tags": ["a"]}},
        rank_fields=["text"],
    )
    dumped = rerank.model_dump()
    assert dumped["extra_body"] == {"instruction": "x", "options": {"tags": ["a"]}}
    assert json.loads(rerank.model_dump_json())["rank_fields"] == ["text"]
    deep = copy.deepcopy(rerank)
    assert deep.extra_body == rerank.extra_body
    assert deep.rank_fields == ["text"]
    back = pickle.loads(pickle.dumps(rerank.with_options(top_n=2)))
    assert back.extra_body == rerank.extra_body
    assert back.rank_fields == ["text"]
    with pytest.raises(TypeError):
        back.extra_body["options"]["tags"].append("b")


def test_the_core_client_refuses_changes_it_would_not_apply() -> None:
    client = RerankClient(
        api_key=TEST_KEY, transport=LexicalRerankEndpoint(), extra_body={"instruction": "x"}
    )
    assert client.extra_body == {"instruction": "x"}
    with pytest.raises(TypeError, match="extra_body"):
        client.extra_body["instruction"] = "y"  # type: ignore[index]
    for name, value in [
        ("cache", True),  # the store in use would stay the old one
        ("tokenizer", len),  # the cache keys would still name the old tokenizer
        ("max_batch_size", 2),
        ("deadline", 1.0),
    ]:
        with pytest.raises(AttributeError, match=name):
            setattr(client, name, value)
    assert client.with_deadline(1.0).deadline == 1.0  # the supported way, still cheap
    assert client.deadline is None


# -- pydantic's model_copy(update=...) applies the settings it shows ------------------------
@ids
def test_model_copy_with_an_update_calls_with_the_settings_it_shows(adapter: type) -> None:
    """``model_copy(update=...)`` is how pydantic users clone a model. A copy that shows
    ``model="acme/model-b"`` and ``deadline=0.3`` must send model b under a 0.3 s deadline
    (not keep the original's client), and the original must be left as it was."""
    endpoint = LexicalRerankEndpoint()
    shared = make(adapter, endpoint, model="acme/model-a", top_n=2)
    copy = shared.model_copy(update={"model": "acme/model-b", "deadline": 0.3, "top_n": 1})
    assert (copy.model, copy.deadline, copy.top_n) == ("acme/model-b", 0.3, 1)
    assert (copy.client.model, copy.client.deadline) == ("acme/model-b", 0.3)
    assert "acme/model-b" in repr(copy)
    run(copy, items(adapter))
    run(shared, items(adapter))
    assert [(r["model"], r.get("top_n")) for r in endpoint.requests] == [
        ("acme/model-b", 1),
        ("acme/model-a", 2),
    ]
    assert (shared.client.model, shared.client.deadline, shared.top_n) == ("acme/model-a", None, 2)


@ids
def test_model_copy_of_call_options_shares_the_pool_and_a_plain_copy_is_the_same(
    adapter: type,
) -> None:
    endpoint = LexicalRerankEndpoint()
    shared = make(adapter, endpoint, top_n=5)
    fewer = shared.model_copy(update={"top_n": 2})
    assert fewer.client._sdk is shared.client._sdk
    assert not fewer.client._owns_connections
    assert run(fewer, items(adapter)) == expected(2)
    same = shared.model_copy()
    assert same.client._sdk is shared.client._sdk
    assert not same.client._owns_connections
    assert run(same, items(adapter)) == expected(5)
    with pytest.raises(RerankConfigError):
        shared.model_copy(update={"top_n": 0})


@pytest.mark.loopback
@ids
@pytest.mark.parametrize("how", ["copy", "deepcopy", "model_copy", "model_copy_update"])
def test_closing_a_copys_client_leaves_the_originals_call_in_flight(
    adapter: type, how: str
) -> None:
    """A copy (``copy.copy``, ``copy.deepcopy``, ``model_copy()``, ``model_copy(update=...)``
    of a call option) shares the original's pool but does not own it: closing the copy's
    client, as ``with copy.client:`` does, must not cut the call the original has in flight
    (it did for the first three: "Could not connect", a RerankConnectionError)."""
    endpoint = LexicalRerankEndpoint()
    received, release = threading.Event(), threading.Event()

    def held(request: httpx.Request) -> httpx.Response:
        received.set()
        release.wait(10)
        return endpoint.handle(request)

    with serve_loopback(held) as url:
        original = adapter(api_key=TEST_KEY, base_url=url, top_n=2, max_retries=0)
        if how == "copy":
            clone = copy.copy(original)
        elif how == "deepcopy":
            clone = copy.deepcopy(original)
        elif how == "model_copy":
            clone = original.model_copy()
        else:
            clone = original.model_copy(update={"top_n": 1})
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(run, original, items(adapter))
            assert received.wait(10)
            clone.client.close()  # what `with clone.client:` does at its end
            release.set()
            assert in_flight.result(timeout=10) == expected(2)
    assert clone.client._sdk is original.client._sdk  # one pool


@ids
def test_with_options_takes_the_key_by_the_name_the_constructor_takes(adapter: type) -> None:
    """``api_key=`` works in the constructor and by assignment on both adapters; LangChain's
    ``with_options(api_key=...)`` was refused ("did you mean 'together_api_key'?")."""
    endpoint = LexicalRerankEndpoint(api_keys={"second-key"})
    first = make(adapter, endpoint)
    second = first.with_options(api_key="second-key")
    assert run(second, items(adapter))
    assert "second-key" not in repr(second)
