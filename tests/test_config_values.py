"""Settings a service reads from files and the environment: an API key or header value
with a character HTTP cannot carry and a bad ``base_url``.
Each is refused at construction with a :class:`RerankConfigError` that names the problem
and never quotes any part of a credential, through every way a setting arrives: the core's
arguments, the environment, both adapters (at construction and assigned afterwards), and the
CLI (one line, no traceback)."""

from __future__ import annotations

import base64
import traceback
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import together_rerank_plugins as trp
from together_rerank_plugins import RerankClient, cli
from together_rerank_plugins.testing import LexicalRerankEndpoint

from .conftest import TEST_KEY, recording

#: the parts of a password that must never show: each half around the unescaped character
SECRET_PARTS = ("s3cr", "et-PW-42")


def _adapters() -> list[type]:
    from together_rerank_plugins.langchain import TogetherRerank as LC
    from together_rerank_plugins.llama_index import TogetherRerank as LI

    return [LI, LC]


def _build(way: str, base_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Build something configured with ``base_url`` the way ``way`` names."""
    if way == "core":
        return RerankClient(api_key=TEST_KEY, base_url=base_url)
    if way == "env":
        monkeypatch.setenv("TOGETHER_BASE_URL", base_url)
        return RerankClient(api_key=TEST_KEY)
    cls = {"llama_index": _adapters()[0], "langchain": _adapters()[1]}[way.split(":")[0]]
    if way.endswith(":assigned"):
        adapter = cls(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
        adapter.base_url = base_url
        return adapter
    return cls(api_key=TEST_KEY, base_url=base_url)


WAYS = ["core", "env", "llama_index", "langchain", "llama_index:assigned", "langchain:assigned"]


def _refused(build: Callable[[], Any]) -> trp.RerankConfigError:
    with pytest.raises(trp.RerankConfigError) as info:
        build()
    return info.value


def _shows(err: BaseException) -> str:
    """Everything an error shows: message, repr, and the whole traceback with its chain."""
    return "\n".join([str(err), repr(err), *traceback.format_exception(err)])


# -- a bad base_url ----------------------------------------------------------------------
BAD_URLS = {
    # url: words the message must contain (the problem, named)
    "http://rerank.example.com:99999": "port",
    "http://rerank.example.com:http": "port",
    "http://[::1:8000/v1": "[",
    "http://[::1]x:8000": "port",
    "http://:8000/v1": "host",
    "http://alice:s3cr/et-PW-42@rerank.example.com/v1": "percent-encode",
    "http://alice:s3cr?et-PW-42@rerank.example.com/v1": "percent-encode",
    "http://alice:s3cr#et-PW-42@rerank.example.com/v1": "percent-encode",
    "http://alice:s3cr%2Fet-PW-42@rerank.example.com:99999/v1": "port",
    "http://alice:s3cr et-PW-42@rerank.example.com/v1": "space",
    "http://rerank.example.com/v1\n": "",  # surrounding whitespace is stripped: accepted
    # typos that break the scheme: the credentials must stay hidden all the same
    "https:/alice:s3cr%2Fet-PW-42@rerank.example.com/v1": "http(s) url",
    "https:alice:s3cr%2Fet-PW-42@rerank.example.com/v1": "http(s) url",
    "alice:s3cr%2Fet-PW-42@rerank.example.com:8000/v1": "http(s) url",
    "//alice:s3cr%2Fet-PW-42@rerank.example.com/v1": "http(s) url",
    "https//alice:s3cr%2Fet-PW-42@rerank.example.com/v1": "http(s) url",
    "http:\\\\alice:s3cr%2Fet-PW-42@rerank.example.com/v1": "http(s) url",
    # a token in the query (an Azure Functions ?code=, a gateway's ?api-key=)
    "https://rerank.example.com/api?code=s3cr%2Fet-PW-42": "query",
}


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("url", [u for u, word in BAD_URLS.items() if word])
def test_a_bad_base_url_is_a_config_error_that_quotes_no_credential(
    url: str, way: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = _refused(lambda: _build(way, url, monkeypatch))
    assert BAD_URLS[url] in str(err).lower() or BAD_URLS[url] in str(err)
    shown = _shows(err)
    assert not any(part in shown for part in (*SECRET_PARTS, "s3cr%2Fet")), shown
    assert "alice" not in shown
    assert "base_url" in str(err) or "TOGETHER_BASE_URL" in str(err)


def test_a_numeric_password_with_a_slash_is_refused_not_sent_to_the_wrong_host() -> None:
    # parsed as host "alice", port 12, path "/34@rerank.example.com": it used to be accepted,
    # sent to the wrong host, and shown (password included) by repr and base_url
    url = "http://alice:12" + "/34@h.example"  # (tracebacks quote this line: kept apart)
    err = _refused(lambda: RerankClient(api_key=TEST_KEY, base_url=url))
    assert "12/34" not in _shows(err)


def test_a_percent_encoded_password_is_accepted_and_sent_as_written() -> None:
    seen: list[httpx.Request] = []
    client = RerankClient(
        api_key=TEST_KEY,
        base_url="http://alice:s3cr%2Fet-PW-42@rerank.example.com/v1",
        transport=recording(seen),
    )
    client.rerank("q", ["a"])
    assert seen[0].headers["authorization"] == "Basic " + base64.b64encode(
        b"alice:s3cr/et-PW-42"
    ).decode("ascii")
    assert seen[0].url.host == "rerank.example.com"


def test_an_at_sign_in_the_path_is_refused_with_the_way_to_write_it() -> None:
    err = _refused(lambda: RerankClient(api_key=TEST_KEY, base_url="http://gw.example/@team"))
    assert "%40" in str(err)
    client = RerankClient(api_key=TEST_KEY, base_url="http://gw.example/%40team")
    assert client.base_url == "http://gw.example/%40team"


def test_surrounding_whitespace_of_a_base_url_is_stripped() -> None:
    client = RerankClient(api_key=TEST_KEY, base_url=" http://rerank.example.com/v1\n")
    assert client.base_url == "http://rerank.example.com"


def test_the_cli_reports_a_bad_base_url_on_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    docs = tmp_path / "docs.txt"
    docs.write_text("Paris\nBerlin\n", encoding="utf-8")
    monkeypatch.setenv("TOGETHER_API_KEY", TEST_KEY)
    url = "http://alice:s3cr/et-PW-42@rerank.example.com/v1"
    code = cli.main(["rerank", "capital", str(docs), "--base-url", url])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: RerankConfigError:")
    assert not any(part in err for part in SECRET_PARTS)


# -- a key or header value HTTP cannot carry ----------------------------------------------
KEY = "sk-fake-0123456789abcdef-do-not-leak"
#: each key as a file or a paste may hold it, and the words the error must say
BAD_KEYS = {
    "\ufeff" + KEY: "byte-order mark",  # a key file saved "UTF-8 with BOM"
    KEY[:10] + "\u00e9" + KEY[10:]: "non-ASCII",  # a stray character typed into it
    KEY + "\u200b": "U+200B",  # a zero-width space pasted from a web page
    KEY[:5] + "\x1b" + KEY[5:]: "control",  # an escape sequence pasted from a terminal
}


def _key_parts(key: str) -> list[str]:
    """Pieces of the key an error must not show (any 8 characters in a row)."""
    plain = "".join(c for c in key if c.isascii() and c.isprintable())
    return [plain[i : i + 8] for i in range(len(plain) - 7)]


def _key_way(way: str, key: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    if way == "core":
        return RerankClient(api_key=key, transport=LexicalRerankEndpoint())
    if way == "env":
        monkeypatch.setenv("TOGETHER_API_KEY", key)
        return RerankClient(transport=LexicalRerankEndpoint())
    module, _, when = way.partition(":")
    cls = {"llama_index": _adapters()[0], "langchain": _adapters()[1]}[module]
    if when == "assigned":
        adapter = cls(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
        setattr(adapter, cls._KEY_FIELD, key)  # api_key, or LangChain's together_api_key
        return adapter
    if when == "env":
        monkeypatch.setenv("TOGETHER_API_KEY", key)
        return cls(transport=LexicalRerankEndpoint())
    return cls(api_key=key, transport=LexicalRerankEndpoint())


KEY_WAYS = [*WAYS, "llama_index:env", "langchain:env"]


@pytest.mark.parametrize("way", KEY_WAYS)
@pytest.mark.parametrize("key", list(BAD_KEYS), ids=list(BAD_KEYS.values()))
def test_a_key_http_cannot_carry_is_refused_at_construction_without_showing_it(
    key: str, way: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = _refused(lambda: _key_way(way, key, monkeypatch))
    message = str(err)
    assert BAD_KEYS[key] in message, message
    assert "position" in message
    assert ("TOGETHER_API_KEY" if "env" in way else "api_key") in message
    shown = _shows(err)
    assert not any(part in shown for part in _key_parts(key)), shown


def test_an_assigned_bad_key_changes_nothing() -> None:
    from together_rerank_plugins.llama_index import TogetherRerank

    rerank = TogetherRerank(api_key=TEST_KEY, transport=LexicalRerankEndpoint(), top_n=1)
    with pytest.raises(trp.RerankConfigError):
        rerank.api_key = "\ufeff" + KEY
    assert rerank.api_key is not None
    assert rerank.api_key.get_secret_value() == TEST_KEY
    assert rerank.client._sdk.settings.api_key == TEST_KEY


def test_the_position_is_said_from_the_key_as_given() -> None:
    err = _refused(lambda: RerankClient(api_key="\ufeff" + KEY))
    assert "position 0" in str(err)
    assert "utf-8-sig" in str(err)  # how to read such a file
    err = _refused(lambda: RerankClient(api_key=KEY[:10] + "\u00e9" + KEY[10:]))
    assert "position 10" in str(err)
    assert "\u00e9" not in str(err)  # a visible character of the value is never shown


@pytest.mark.parametrize("padding", ["\n", "\r\n", " ", "\t", "\u00a0"])
def test_whitespace_around_a_key_from_a_file_is_stripped(padding: str) -> None:
    seen: list[httpx.Request] = []
    client = RerankClient(api_key=padding + KEY + padding, transport=recording(seen))
    client.rerank("q", ["a"])
    assert [r.headers["authorization"] for r in seen] == [f"Bearer {KEY}"]


HEADER_SECRET = "gw-token-7d1e9c3b5a-do-not-leak"


@pytest.mark.parametrize(
    ("value", "word"),
    [
        ("\ufeff" + HEADER_SECRET, "byte-order mark"),
        (HEADER_SECRET[:6] + "\u00fc" + HEADER_SECRET[6:], "non-ASCII"),
        (HEADER_SECRET[:6] + "\x00" + HEADER_SECRET[6:], "control"),
    ],
    ids=["bom", "non-ascii", "control"],
)
@pytest.mark.parametrize("way", ["core", "llama_index", "langchain", "llama_index:assigned"])
def test_a_header_value_http_cannot_carry_is_refused_naming_the_header(
    value: str, word: str, way: str
) -> None:
    headers = {"X-Gateway-Token": value}

    def build() -> Any:
        if way == "core":
            return RerankClient(api_key=TEST_KEY, default_headers=headers)
        module, _, when = way.partition(":")
        cls = {"llama_index": _adapters()[0], "langchain": _adapters()[1]}[module]
        if when == "assigned":
            adapter = cls(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
            adapter.default_headers = headers
            return adapter
        return cls(api_key=TEST_KEY, default_headers=headers)

    err = _refused(build)
    assert "X-Gateway-Token" in str(err)
    assert word in str(err)
    assert "position" in str(err)
    assert not any(part in _shows(err) for part in _key_parts(value))


def test_a_header_value_read_from_a_file_loses_its_newline() -> None:
    seen: list[httpx.Request] = []
    client = RerankClient(
        api_key=TEST_KEY,
        default_headers={"X-Gateway-Token": HEADER_SECRET + "\n"},
        transport=recording(seen),
    )
    client.rerank("q", ["a"])
    assert [r.headers["x-gateway-token"] for r in seen] == [HEADER_SECRET]


def test_a_bad_key_never_reaches_a_call_that_fallback_would_miss() -> None:
    # before: accepted here, then every call raised a raw UnicodeEncodeError holding the key
    err = _refused(
        lambda: RerankClient(
            api_key="\ufeff" + KEY, on_error="fallback", transport=LexicalRerankEndpoint()
        )
    )
    assert isinstance(err, ValueError)


def test_the_cli_reports_a_bad_key_on_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    docs = tmp_path / "docs.txt"
    docs.write_text("Paris\nBerlin\n", encoding="utf-8")
    monkeypatch.setenv("TOGETHER_API_KEY", "\ufeff" + KEY)
    code = cli.main(["rerank", "capital", str(docs), "--base-url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert "TOGETHER_API_KEY" in err
    assert not any(part in err for part in _key_parts(KEY))


# -- a boolean where a number is asked for, a string where a boolean is ----------------------
@pytest.mark.parametrize(
    "field", ["top_n", "score_threshold", "timeout", "deadline", "max_retries", "max_batch_size"]
)
@pytest.mark.parametrize("adapter", ["llama_index", "langchain"])
def test_an_adapter_refuses_a_boolean_for_a_number(adapter: str, field: str) -> None:
    """pydantic read ``top_n=True`` as 1 and ``score_threshold=True`` as 1.0 (every result
    dropped), which the core, ``with_options`` and assignment all refuse."""
    cls = _adapters()[0] if adapter == "llama_index" else _adapters()[1]
    err = _refused(lambda: cls(api_key=TEST_KEY, **{field: True}))
    assert field in str(err)


@pytest.mark.parametrize("value", ["false", "no", None, 0, 1])
def test_the_core_refuses_a_dedupe_that_is_not_a_boolean(value: Any) -> None:
    # bool("false") is True: the string asked for the opposite of what it got
    err = _refused(lambda: RerankClient(api_key=TEST_KEY, dedupe=value))
    assert "dedupe" in str(err)
    assert "True or False" in str(err)
