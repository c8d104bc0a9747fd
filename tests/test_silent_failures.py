"""Silent failures: a wrong ranking returned with no error, a setting that said one thing
while the client did another, or every concurrent call paying a dead store's timeout. Each
test failed on the code before its fix."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import httpx
import pytest

import together_rerank_plugins._cache as cache_module
from together_rerank_plugins import RerankClient, RerankConfigError
from together_rerank_plugins.testing import LexicalRerankEndpoint

from .conftest import TEST_KEY

LLAMA = "Salesforce/Llama-Rank-V1"
MXBAI = "mixedbread-ai/Mxbai-Rerank-Large-V2"


# -- an empty candidate's internal dedupe key could be spelled by a real document ----------
@pytest.mark.parametrize("dedupe", [True, False])
def test_a_document_spelling_a_blank_candidates_internal_key_is_still_scored(
    dedupe: bool,
) -> None:
    endpoint = LexicalRerankEndpoint()
    client = RerankClient(api_key=TEST_KEY, transport=endpoint, dedupe=dedupe)
    docs = ["", "green pears", "\x00blank:0"]  # the last is the only one sharing a word
    results = client.rerank("blank", docs)
    assert endpoint.requests[-1]["documents"] == ["green pears", "\x00blank:0"]
    assert results[0].index == 2
    assert results[0].relevance_score > 0
    assert results.duplicates == 0
    assert sorted(r.index for r in results) == [0, 1, 2]


# -- a plan made by one client and executed by another -------------------------------------
def test_execute_sends_a_foreign_plan_as_this_client_would_have_planned_it() -> None:
    endpoint = LexicalRerankEndpoint()
    a = RerankClient(api_key=TEST_KEY, transport=endpoint, model=LLAMA)
    b = RerankClient(api_key=TEST_KEY, transport=endpoint, model=MXBAI)
    results = b.execute(a.plan("red apples", ["green pears", "red apples"]))
    assert endpoint.requests[-1]["model"] == MXBAI  # what served_by says answered
    assert results.served_by == b.endpoint
    assert [r.index for r in results] == [1, 0]


async def test_aexecute_sends_a_foreign_plan_as_this_client_would_have_planned_it() -> None:
    endpoint = LexicalRerankEndpoint()
    a = RerankClient(api_key=TEST_KEY, transport=endpoint, model=LLAMA)
    b = RerankClient(api_key=TEST_KEY, transport=endpoint, model=MXBAI)
    results = await b.aexecute(a.plan("red apples", ["green pears", "red apples"]))
    assert endpoint.requests[-1]["model"] == MXBAI
    assert results.served_by == b.endpoint


# -- a timeout too large for the socket layer failed every call as "could not connect" -----
@pytest.mark.parametrize("option", ["timeout", "deadline"])
@pytest.mark.parametrize("value", [float("inf"), 1e10, 1e300])
def test_a_timeout_or_deadline_too_large_to_wait_is_refused_at_construction(
    option: str, value: float
) -> None:
    with pytest.raises(RerankConfigError, match=f"`{option}`.*None"):
        RerankClient(api_key=TEST_KEY, transport=LexicalRerankEndpoint(), **{option: value})


# -- a failed store: when its skip window ends, one call retries it, not every call --------
class _DeadStore:
    """A blackholed store: every read fails; a read started with ``hold`` set waits for
    ``release`` first (as a Redis read waits for its socket timeout)."""

    def __init__(self) -> None:
        self.reads = 0
        self.hold = False
        self.release = threading.Event()
        self._lock = threading.Lock()

    def mget(self, keys: Any) -> list[float | None]:
        with self._lock:
            self.reads += 1
        if self.hold:
            self.release.wait(10)
        raise TimeoutError("Timeout reading from socket")

    def mset(self, items: Any) -> None:
        raise TimeoutError("Timeout writing to socket")


def test_one_call_retries_a_failed_store_when_its_window_ends_the_others_skip_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = _DeadStore()
    client = RerankClient(api_key=TEST_KEY, transport=LexicalRerankEndpoint(), cache=store)
    client.rerank("warm", ["up"])  # fails: the store is skipped for STORE_RETRY_AFTER
    assert store.reads == 1
    later = cache_module._clock() + cache_module.STORE_RETRY_AFTER + 0.1
    monkeypatch.setattr(cache_module, "_clock", lambda: later)
    store.hold, store.reads = True, 0
    results: list[list[int]] = []
    finished = threading.Condition()

    def call() -> None:
        ranking = [r.index for r in client.rerank("red apples", ["green pears", "red apples"])]
        with finished:
            results.append(ranking)
            finished.notify()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        with finished:  # all but the retrying call finish while its read still hangs
            finished.wait_for(lambda: len(results) == 7, timeout=10)
            assert len(results) == 7
        assert store.reads == 1
    finally:
        store.release.set()
        for t in threads:
            t.join(timeout=10)
    assert results == [[1, 0]] * 8  # every call ranked, the retrying one included


# -- what a gateway routes on is part of where a score came from ---------------------------
def _gateway(request: httpx.Request) -> httpx.Response:
    """Scores on a scale set by the route: the 'canary' scorer answers 10x the 'stable'
    one, as two different models behind one URL would."""
    body = json.loads(request.read())
    auth = request.headers.get("authorization", "")
    user = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
    scale = (
        10.0 if "canary" in (request.headers.get("x-route", ""), user.partition(":")[0]) else 1.0
    )
    scores = [scale * (0.9 if "apple" in d else 0.1) for d in body["documents"]]
    answer = [{"index": i, "relevance_score": s} for i, s in enumerate(scores)]
    return httpx.Response(200, json={"results": answer})


def _gateway_client(store: Any, **options: Any) -> RerankClient:
    options.setdefault("base_url", "https://gw.internal")
    return RerankClient(
        api_key=TEST_KEY,
        model="acme/rerank",
        cache=store,
        transport=httpx.MockTransport(_gateway),
        **options,
    )


@pytest.mark.parametrize(
    ("stable", "canary"),
    [
        ({"default_headers": {"x-route": "stable"}}, {"default_headers": {"x-route": "canary"}}),
        (
            {"base_url": "https://stable:pw@gw.internal"},
            {"base_url": "https://canary:pw@gw.internal"},
        ),
    ],
    ids=["default_headers", "base_url user"],
)
def test_clients_a_gateway_routes_apart_never_share_cached_scores(
    stable: dict[str, Any], canary: dict[str, Any]
) -> None:
    store = cache_module.InMemoryScoreStore()
    _gateway_client(store, **stable).rerank("fruit", ["apple pie", "banana bread"])
    results = _gateway_client(store, **canary).rerank("fruit", ["apple pie", "rye bread"])
    assert results.cache_hits == 0
    assert [(r.index, r.relevance_score) for r in results] == [(0, 9.0), (1, 1.0)]
    # the same route does share them (the cache is on, and keyed on the route)
    again = _gateway_client(store, **canary).rerank("fruit", ["apple pie", "rye bread"])
    assert again.cache_hits == 2


def test_a_rotated_base_url_password_keeps_the_cached_scores() -> None:
    """The user in ``base_url`` may select a route; its password only authenticates it."""
    store = cache_module.InMemoryScoreStore()
    first = _gateway_client(store, base_url="https://canary:old@gw.internal")
    first.rerank("fruit", ["apple pie", "rye bread"])
    rotated = _gateway_client(store, base_url="https://canary:new@gw.internal")
    assert rotated.rerank("fruit", ["apple pie", "rye bread"]).cache_hits == 2


# -- a setting assigned after construction said one thing while the client did another ----
def _adapters() -> list[Any]:
    from together_rerank_plugins.langchain import TogetherRerank as LangChainRerank
    from together_rerank_plugins.llama_index import TogetherRerank as LlamaIndexRerank

    return [LangChainRerank, LlamaIndexRerank]


def _rank(adapter: Any, texts: list[str], query: str) -> list[str]:
    """Rank through the adapter's own framework entry point; the texts, best first."""
    if type(adapter).__module__.endswith("langchain"):
        from langchain_core.documents import Document

        out = adapter.compress_documents([Document(page_content=t) for t in texts], query)
        return [d.page_content for d in out]
    from llama_index.core.schema import NodeWithScore, TextNode

    nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in texts]
    return [n.node.get_content() for n in adapter.postprocess_nodes(nodes, query_str=query)]


@pytest.mark.parametrize("adapter_class", _adapters(), ids=["langchain", "llama_index"])
def test_a_setting_assigned_after_construction_is_the_one_used(adapter_class: Any) -> None:
    endpoint = LexicalRerankEndpoint()
    adapter = adapter_class(api_key=TEST_KEY, transport=endpoint, top_n=None)
    adapter.model = MXBAI
    adapter.dedupe = False
    texts = ["red apples", "red apples", "green pears"]
    assert len(_rank(adapter, texts, "red apples")) == 3  # dedupe=False keeps both copies
    assert endpoint.requests[-1]["model"] == MXBAI
    assert adapter.client.model == MXBAI
    assert adapter.model_dump()["model"] == MXBAI
    adapter.deadline = 0.25
    assert adapter.client.deadline == 0.25
    adapter.top_n = 1
    assert _rank(adapter, texts, "green pears") == ["green pears"]


@pytest.mark.parametrize("adapter_class", _adapters(), ids=["langchain", "llama_index"])
def test_an_invalid_setting_assigned_after_construction_is_refused_and_changes_nothing(
    adapter_class: Any,
) -> None:
    adapter = adapter_class(api_key=TEST_KEY, transport=LexicalRerankEndpoint(), top_n=2)
    client = adapter.client
    with pytest.raises(RerankConfigError, match="top_n"):
        adapter.top_n = -1
    with pytest.raises(RerankConfigError, match="on_error"):
        adapter.on_error = "ignore"
    assert adapter.top_n == 2
    assert adapter.on_error == "raise"
    assert adapter.client is client


def test_a_framework_field_assigned_after_construction_keeps_the_client() -> None:
    """LlamaIndex assigns ``callback_manager`` to postprocessors it is given: not a
    setting of ours, so no new client (and no new connection pool) for it."""
    from llama_index.core.callbacks import CallbackManager

    from together_rerank_plugins.llama_index import TogetherRerank

    adapter = TogetherRerank(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
    client = adapter.client
    adapter.callback_manager = CallbackManager([])
    assert adapter.client is client


# -- the first call in a process spent its deadline loading the SDK ------------------------
def test_warm_up_loads_the_sdk_before_the_first_call_without_sending_anything() -> None:
    """A fresh process: the first call would load the ``together`` SDK (about 0.5 s) inside
    its deadline, leaving a hung primary no time to fail over; ``warm_up()`` does it first."""
    import subprocess
    import sys

    script = """
import sys
from together_rerank_plugins import RerankClient
from together_rerank_plugins.testing import LexicalRerankEndpoint
primary, backup = LexicalRerankEndpoint(), LexicalRerankEndpoint()
client = RerankClient(api_key="k", transport=primary, deadline=0.8,
    failover=[RerankClient(api_key="k", transport=backup, base_url="http://backup")])
before = "together" in sys.modules
assert client.warm_up() is client
print(before, "together" in sys.modules, len(primary.requests) + len(backup.requests),
      all(c._sdk._sync is not None for c in (client, *client.failover)))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "True", "0", "True"]
