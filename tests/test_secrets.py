"""The API key never shows: every channel a key could leak through, searched for a fake key.

Channels: ``repr``/``str``; LlamaIndex ``to_dict``/``to_json``; LangChain ``model_dump``,
``model_dump_json``, ``dumpd``/``dumps``; pickles; log records at every level (DEBUG from
every logger, the SDK's and httpx's included); LlamaIndex events, callbacks and spans,
LangChain callbacks; error messages, reprs and whole tracebacks (chained causes included)
for 401/404/500/timeout/connection errors, also when the server echoes the key back; and
cassettes. In-process transports, except the one loopback test that lets httpcore log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient
from together_rerank_plugins.testing import LexicalRerankEndpoint, serve_loopback

from .test_cassettes import vcr_config  # noqa: F401  (the project's recording settings)

KEY = "sk-fake-SECRET-7f3a9c1e5b2d4a6f8e0c-do-not-leak"
CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"
DOCS = ["Paris is the capital of France.", "Berlin is in Germany."]


def assert_hidden(text: Any, where: str) -> None:
    rendered = text if isinstance(text, str) else repr(text)
    assert KEY not in rendered, f"the API key appears in {where}: {rendered[:2000]}"


def chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then its causes and contexts, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]


def assert_error_hides_key(err: BaseException, *, chained: bool = True) -> None:
    """``err`` itself, and with ``chained`` every cause and context and the whole traceback."""
    for e in chain(err) if chained else [err]:
        name = type(e).__name__
        assert_hidden(str(e), f"str({name})")
        assert_hidden(repr(e), f"repr({name})")
        assert_hidden(repr(e.args), f"{name}.args")
        for attr in ("server_message", "message", "body"):
            if hasattr(e, attr):
                assert_hidden(repr(getattr(e, attr)), f"{name}.{attr}")
    if chained:
        assert_hidden("".join(traceback.format_exception(err)), "the formatted traceback")


# -- factories: the key passed three ways -------------------------------------------------
@pytest.fixture(params=["argument", "secretstr", "environment"])
def key_kwargs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    if request.param == "environment":
        monkeypatch.setenv("TOGETHER_API_KEY", KEY)
        return {}
    return {"api_key": KEY if request.param == "argument" else SecretStr(KEY)}


def core(transport: Any = None, **kw: Any) -> RerankClient:
    return RerankClient(**({"api_key": KEY, "max_retries": 0, "transport": transport} | kw))


def li(transport: Any = None, **kw: Any) -> Any:
    from together_rerank_plugins.llama_index import TogetherRerank

    return TogetherRerank(**({"api_key": KEY, "max_retries": 0, "transport": transport} | kw))


def lc(transport: Any = None, **kw: Any) -> Any:
    from together_rerank_plugins.langchain import TogetherRerank

    return TogetherRerank(**({"api_key": KEY, "max_retries": 0, "transport": transport} | kw))


def nodes() -> list[Any]:
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=t), score=0.5) for t in DOCS]


def documents() -> list[Any]:
    from langchain_core.documents import Document

    return [Document(t) for t in DOCS]


def echo(status: int) -> httpx.MockTransport:
    """A server that quotes the bearer key back in its error body (some proxies do)."""

    def reply(request: httpx.Request) -> httpx.Response:
        sent = request.headers.get("authorization", "")
        return httpx.Response(
            status,
            headers={"retry-after-ms": "1"},
            json={"error": {"message": f"key {sent[len('Bearer ') :]} refused", "type": "x"}},
        )

    return httpx.MockTransport(reply)


def hang() -> httpx.MockTransport:
    def reply(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    return httpx.MockTransport(reply)


def refuse() -> httpx.MockTransport:
    def reply(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    return httpx.MockTransport(reply)


# -- repr, str, serialization -------------------------------------------------------------
def test_repr_and_str_never_show_the_key(key_kwargs: dict[str, Any]) -> None:
    from together_rerank_plugins.langchain import TogetherRerank as LC
    from together_rerank_plugins.llama_index import TogetherRerank as LI

    for obj in (RerankClient(**key_kwargs), LI(**key_kwargs), LC(**key_kwargs)):
        assert_hidden(repr(obj), f"repr({type(obj).__module__})")
        assert_hidden(str(obj), f"str({type(obj).__module__})")
        assert_hidden(f"{obj!s} {obj!r}", "an f-string")
    assert_hidden(repr(LI(**key_kwargs).client), "repr(adapter.client)")


def test_llama_index_serialization_never_contains_the_key(key_kwargs: dict[str, Any]) -> None:
    from together_rerank_plugins.llama_index import TogetherRerank

    rerank = TogetherRerank(**key_kwargs)
    assert_hidden(json.dumps(rerank.to_dict()), "to_dict()")
    assert_hidden(rerank.to_json(), "to_json()")
    assert_hidden(repr(rerank.model_dump()), "model_dump()")
    assert_hidden(rerank.model_dump_json(), "model_dump_json()")
    assert_hidden(repr(rerank.model_dump(mode="json", by_alias=True)), "model_dump(by_alias)")


def test_langchain_serialization_never_contains_the_key(key_kwargs: dict[str, Any]) -> None:
    from langchain_core.load import dumpd, dumps

    from together_rerank_plugins.langchain import TogetherRerank

    rerank = TogetherRerank(**key_kwargs)
    assert_hidden(repr(rerank.model_dump()), "model_dump()")
    assert_hidden(repr(rerank.model_dump(by_alias=True)), "model_dump(by_alias=True)")
    assert_hidden(rerank.model_dump_json(), "model_dump_json()")
    assert_hidden(json.dumps(dumpd(rerank)), "langchain_core.load.dumpd()")
    assert_hidden(dumps(rerank), "langchain_core.load.dumps()")


@pytest.mark.parametrize("make", [li, lc], ids=["llama_index", "langchain"])
@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_pickles_never_contain_the_key(
    make: Callable[..., Any], protocol: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pickle.dumps(make(), protocol=protocol)  # pickling must work, without the key
    assert KEY.encode() not in data
    assert KEY.encode("unicode_escape") not in data
    monkeypatch.setenv("TOGETHER_API_KEY", KEY)  # the key comes back from the environment
    again = pickle.loads(data)
    assert_hidden(repr(again), "repr(unpickled)")


# -- errors -------------------------------------------------------------------------------
def _raise(call: Callable[[], Any]) -> BaseException:
    with pytest.raises(trp.RerankError) as info:
        call()
    return info.value


ECHOED = [
    pytest.param(401, trp.AuthenticationError, id="401"),
    pytest.param(404, trp.EndpointNotFoundError, id="404"),
    pytest.param(500, trp.ServerError, id="500"),
]


def _echoed_errors(status: int) -> list[BaseException]:
    return [
        _raise(lambda: core(echo(status)).rerank("q", DOCS)),
        _raise(lambda: asyncio.run(core(echo(status)).arerank("q", DOCS))),
        _raise(lambda: li(echo(status)).postprocess_nodes(nodes(), query_str="q")),
        _raise(lambda: lc(echo(status), max_retries=1).compress_documents(documents(), "q")),
    ]


@pytest.mark.parametrize(("status", "cls"), ECHOED)
def test_our_errors_scrub_a_key_the_server_echoes(status: int, cls: type) -> None:
    for err in _echoed_errors(status):
        assert type(err) is cls
        assert "***" in str(err)  # the server's message is quoted, with the key scrubbed
        assert_error_hides_key(err, chained=False)


@pytest.mark.parametrize(("status", "cls"), ECHOED)
def test_tracebacks_never_show_a_key_the_server_echoes(status: int, cls: type) -> None:
    """The SDK's exception is our errors' ``__cause__``: a printed or logged traceback, or an
    error tracker, shows it, so it must be scrubbed too."""
    for err in _echoed_errors(status):
        assert_error_hides_key(err)


@pytest.mark.parametrize(
    ("transport", "cls"),
    [(hang, trp.RerankTimeoutError), (refuse, trp.RerankConnectionError)],
    ids=["timeout", "connection"],
)
def test_timeout_and_connection_errors_never_show_the_key(
    transport: Callable[[], httpx.MockTransport], cls: type
) -> None:
    for err in (
        _raise(lambda: core(transport(), max_retries=1).rerank("q", DOCS)),
        _raise(lambda: asyncio.run(lc(transport()).acompress_documents(documents(), "q"))),
    ):
        assert type(err) is cls
        assert_error_hides_key(err)


MISSPELLED = ["apikey", "key", "together_apikey"]
BOTH = pytest.mark.parametrize("make", [li, lc], ids=["llama_index", "langchain"])


@pytest.mark.parametrize("misspelled", MISSPELLED)
@BOTH
def test_a_misspelled_key_argument_is_refused_without_quoting_it(
    misspelled: str, make: Callable[..., Any]
) -> None:
    with pytest.raises(trp.RerankConfigError, match=misspelled) as info:
        make(**{misspelled: KEY})
    assert_error_hides_key(info.value, chained=False)


@pytest.mark.parametrize("misspelled", MISSPELLED)
@BOTH
def test_a_misspelled_key_argument_leaves_no_key_in_the_traceback(
    misspelled: str, make: Callable[..., Any]
) -> None:
    with pytest.raises(trp.RerankConfigError) as info:
        make(**{misspelled: KEY})
    assert_error_hides_key(info.value)


# -- logs ---------------------------------------------------------------------------------
def _exercise(transport: Callable[[], Any], ok: Callable[[], Any]) -> None:
    """Successful and failing calls through the core and both adapters, sync and async."""
    ok_core, ok_li, ok_lc = core(ok()), li(ok()), lc(ok())
    ok_core.rerank("capital of France", DOCS)
    asyncio.run(ok_core.arerank("capital of France", DOCS))
    ok_li.postprocess_nodes(nodes(), query_str="capital of France")
    asyncio.run(ok_li.apostprocess_nodes(nodes(), query_str="capital of France"))
    ok_lc.compress_documents(documents(), "capital of France")
    asyncio.run(ok_lc.acompress_documents(documents(), "capital of France"))
    for status in (401, 404, 500):
        _raise(lambda s=status: core(transport(s), max_retries=1).rerank("q", DOCS))
        _raise(lambda s=status: li(transport(s)).postprocess_nodes(nodes(), query_str="q"))
        _raise(lambda s=status: asyncio.run(lc(transport(s)).acompress_documents(documents(), "q")))
    _raise(lambda: core(hang(), max_retries=1).rerank("q", DOCS))
    _raise(lambda: core(refuse(), max_retries=1).rerank("q", DOCS))


def assert_logs_hide_key(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "nothing was logged: is DEBUG really on?"
    assert {"together", "httpx"} <= {r.name.split(".")[0] for r in caplog.records}
    for record in caplog.records:
        where = f"a {record.levelname} record of {record.name!r}"
        assert_hidden(record.getMessage(), where)
        assert_hidden(repr(record.args), f"the args of {where}")
        if record.exc_info and record.exc_info[1] is not None:
            assert_error_hides_key(record.exc_info[1])
    assert_hidden(caplog.text, "the formatted log (tracebacks included)")


def test_logs_at_every_level_never_show_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records reach caplog
    _exercise(echo, LexicalRerankEndpoint)
    assert_logs_hide_key(caplog)


def test_fallback_warning_never_shows_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    out = lc(echo(500), on_error="fallback", top_n=1).compress_documents(documents(), "q")
    assert [d.metadata.get("rerank_fallback") for d in out] == [True]
    li(echo(503), on_error="fallback").postprocess_nodes(nodes(), query_str="q")
    asyncio.run(core(echo(502), on_error="fallback").arerank("q", DOCS))
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert_logs_hide_key(caplog)


@pytest.mark.loopback
def test_logs_on_real_sockets_never_show_the_key(caplog: pytest.LogCaptureFixture) -> None:
    """With real sockets httpcore logs too (connections, headers sent and received)."""
    caplog.set_level(logging.DEBUG)
    endpoint = LexicalRerankEndpoint()
    echoing = echo(401)

    def route(request: httpx.Request) -> httpx.Response:
        if "fail" in json.loads(request.content)["query"]:
            return echoing.handler(request)  # type: ignore[no-any-return]
        return endpoint.handle(request)

    with serve_loopback(route) as url:
        client = core(None, base_url=url)
        client.rerank("capital of France", DOCS)
        asyncio.run(client.arerank("capital of France", DOCS))
        _raise(lambda: client.rerank("fail", DOCS))
        _raise(lambda: asyncio.run(lc(None, base_url=url).acompress_documents(documents(), "fail")))
        client.close()
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    assert_logs_hide_key(caplog)


# -- framework events, callbacks, spans ---------------------------------------------------
def test_llama_index_events_callbacks_and_spans_never_show_the_key() -> None:
    from llama_index.core.callbacks import CallbackManager, LlamaDebugHandler
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler

    seen: list[str] = []

    class Events(BaseEventHandler):
        def handle(self, event: Any, **kwargs: Any) -> None:
            seen.append(event.model_dump_json())

    class Spans(SimpleSpanHandler):
        def new_span(self, id_: str, bound_args: Any, instance: Any = None, **kw: Any) -> Any:
            seen.append(repr(bound_args.arguments) + repr(instance))
            return super().new_span(id_, bound_args, instance, **kw)

        def prepare_to_drop_span(
            self, id_: str, bound_args: Any, instance: Any = None, err: Any = None, **kw: Any
        ) -> Any:
            seen.append(repr(err) + "".join(traceback.format_exception(err)) if err else "")
            return super().prepare_to_drop_span(id_, bound_args, instance, err, **kw)

    debug = LlamaDebugHandler()
    root = get_dispatcher()
    events, spans = Events(), Spans()
    root.add_event_handler(events)
    root.add_span_handler(spans)
    try:
        ok = li(LexicalRerankEndpoint(), callback_manager=CallbackManager([debug]))
        ok.postprocess_nodes(nodes(), query_str="capital of France")
        asyncio.run(ok.apostprocess_nodes(nodes(), query_str="capital of France"))
        refused = LexicalRerankEndpoint(api_keys=["another-key"])  # 401, key not echoed
        bad = li(refused, callback_manager=CallbackManager([debug]))
        _raise(lambda: bad.postprocess_nodes(nodes(), query_str="q"))
        _raise(lambda: asyncio.run(bad.apostprocess_nodes(nodes(), query_str="q")))
    finally:
        root.event_handlers.remove(events)
        root.span_handlers.remove(spans)
    assert len(seen) >= 8
    assert_hidden("\n".join(seen), "LlamaIndex events or spans")
    assert_hidden(repr([(e.payload, e.time) for e in debug.get_events()]), "callback payloads")


def test_langchain_callbacks_never_show_the_key() -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    seen: list[str] = []

    class Recorder(BaseCallbackHandler):
        def __getattribute__(self, name: str) -> Any:
            attr = super().__getattribute__(name)
            if name.startswith("on_") and callable(attr):

                def record(*args: Any, **kwargs: Any) -> Any:
                    seen.append(f"{name} {args!r} {kwargs!r}")
                    return attr(*args, **kwargs)

                return record
            return attr

    handler = Recorder()
    lc(LexicalRerankEndpoint()).compress_documents(documents(), "capital", callbacks=[handler])
    asyncio.run(
        lc(LexicalRerankEndpoint()).acompress_documents(documents(), "q", callbacks=[handler])
    )
    _raise(lambda: lc(echo(401)).compress_documents(documents(), "q", callbacks=[handler]))
    assert any(s.startswith("on_retriever_start") for s in seen)  # runs were traced
    assert any(s.startswith("on_retriever_error") for s in seen)
    assert_hidden("\n".join(seen), "LangChain callback arguments")


# -- cassettes ----------------------------------------------------------------------------
def test_committed_cassettes_hold_no_key() -> None:
    import yaml

    files = sorted(p for p in CASSETTES.rglob("*") if p.is_file())
    assert any(p.suffix == ".yaml" for p in files)
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert_hidden(text, str(path))
        assert "Bearer" not in text, path
        if path.suffix == ".yaml":
            for interaction in yaml.safe_load(text)["interactions"]:
                headers = {k.lower(): v for k, v in interaction["request"]["headers"].items()}
                assert headers.get("authorization") == ["DUMMY"], path


def _record(config: dict[str, Any], path: Path, call: Callable[[], Any]) -> str:
    import vcr

    recorder = vcr.VCR(**config)
    with recorder.use_cassette(str(path), record_mode="all"):
        call()
    return path.read_text(encoding="utf-8")


def test_a_new_recording_holds_no_key(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    config = request.getfixturevalue("vcr_config")  # tests/test_cassettes.py's settings
    text = _record(
        config,
        tmp_path / "ok.yaml",
        lambda: core(LexicalRerankEndpoint()).rerank("capital of France", DOCS),
    )
    assert "DUMMY" in text
    assert_hidden(text, "a cassette of a successful call")


def test_a_recorded_error_holds_no_echoed_key(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    config = request.getfixturevalue("vcr_config")
    text = _record(
        config, tmp_path / "401.yaml", lambda: _raise(lambda: core(echo(401)).rerank("q", DOCS))
    )
    assert "refused" in text  # the error body was recorded
    assert_hidden(text, "a cassette of a 401 whose body echoes the key")
