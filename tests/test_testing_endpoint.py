"""The embedded test endpoint behaves like Together's where a mistake would hide: it
answers ``POST /v1/rerank`` only (a wrong ``base_url`` prefix fails offline as it
would against Together), 404s elsewhere in Together's error shape, and names itself in a
response header that the CLI and the demo read (their tests are in test_cli.py and
test_demo.py). In-process, except the tests marked ``loopback`` (127.0.0.1, port 0).
"""

from __future__ import annotations

import httpx
import pytest

from together_rerank_plugins import EndpointNotFoundError, RerankClient
from together_rerank_plugins._console import is_test_endpoint
from together_rerank_plugins.testing import (
    RERANK_PATH,
    TEST_ENDPOINT_HEADER,
    LexicalRerankEndpoint,
    serve_loopback,
)

from .conftest import TEST_KEY, anonymous

DOCS = ["Berlin is in Germany.", "Paris is the capital of France."]


def client(endpoint: LexicalRerankEndpoint, base_url: str) -> RerankClient:
    return RerankClient(api_key=TEST_KEY, base_url=base_url, transport=endpoint, max_retries=0)


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.together.ai",
        "https://api.together.ai/v1",
        "https://api-inference.together.ai/v1",  # Dedicated Model Inference
        "http://127.0.0.1:8000/v1/",
    ],
)
def test_the_base_url_forms_the_client_builds_reach_it(base_url: str) -> None:
    endpoint = LexicalRerankEndpoint()
    assert client(endpoint, base_url).rerank("capital of France", DOCS)[0].index == 1
    assert len(endpoint.requests) == 1


@pytest.mark.parametrize(
    "base_url",
    ["https://gateway.example/together", "https://api.together.ai/v2", "http://h/v1/rerank"],
)
def test_a_wrong_base_url_prefix_is_a_404_as_at_together(base_url: str) -> None:
    endpoint = LexicalRerankEndpoint()
    with pytest.raises(EndpointNotFoundError, match="POST /v1/rerank"):
        client(endpoint, base_url).rerank("capital of France", DOCS)
    assert endpoint.requests == []  # nothing was scored


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/rerank"),
        ("POST", "/v1/rerank/extra"),
        ("POST", "/x/v1/rerank"),
        ("GET", RERANK_PATH),
    ],
)
def test_other_paths_and_methods_get_togethers_error_shape(method: str, path: str) -> None:
    endpoint = LexicalRerankEndpoint()
    response = endpoint.handle(httpx.Request(method, f"http://h{path}", json={}))
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert path in error["message"]
    assert response.headers[TEST_ENDPOINT_HEADER] == "lexical"


def test_every_answer_names_the_test_endpoint() -> None:
    endpoint = LexicalRerankEndpoint(api_keys={"right"})
    ok = endpoint.handle(
        httpx.Request(
            "POST",
            "http://h/v1/rerank",
            headers={"authorization": "Bearer right"},
            json={"model": "m", "query": "q", "documents": ["q"]},
        )
    )
    refused = endpoint.handle(
        httpx.Request("POST", "http://h/v1/rerank", headers={"authorization": "Bearer wrong"})
    )
    assert (ok.status_code, refused.status_code) == (200, 401)
    assert ok.headers[TEST_ENDPOINT_HEADER] == refused.headers[TEST_ENDPOINT_HEADER] == "lexical"


@pytest.mark.loopback
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", RERANK_PATH),
        ("GET", "/v1/models"),
        ("PUT", RERANK_PATH),
        ("DELETE", RERANK_PATH),
        ("PATCH", RERANK_PATH),
        ("OPTIONS", RERANK_PATH),
    ],
)
def test_served_on_loopback_other_methods_keep_their_method(method: str, path: str) -> None:
    """Served over HTTP, a GET (or PUT, DELETE...) reaches the endpoint as itself: it is no
    rerank call (with a key it would otherwise be scored) and is refused in Together's shape,
    naming the method the client used, with the header that says who answered."""
    endpoint = LexicalRerankEndpoint()
    body = {"model": "m", "query": "France", "documents": DOCS}
    with serve_loopback(endpoint) as url, httpx.Client(trust_env=False) as http:
        auth = {"authorization": f"Bearer {TEST_KEY}"}
        answer = http.request(method, f"{url}{path}", json=body, headers=auth)
        head = http.head(f"{url}{RERANK_PATH}", headers=auth)
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert f"No route for {method} {path}" in error["message"]
    assert answer.headers[TEST_ENDPOINT_HEADER] == "lexical"
    # HEAD: the status and headers of a GET, and no body
    assert (head.status_code, head.content) == (404, b"")
    assert head.headers[TEST_ENDPOINT_HEADER] == "lexical"
    assert endpoint.requests == []  # nothing was scored


@pytest.mark.loopback
def test_served_on_loopback_it_keeps_the_path_and_says_who_it_is() -> None:
    endpoint = LexicalRerankEndpoint()
    with serve_loopback(endpoint) as url:
        with httpx.Client(trust_env=False) as http:
            wrong = http.post(f"{url}/proxy{RERANK_PATH}", json={})
        assert wrong.status_code == 404
        assert set(wrong.json()["error"]) == {"message", "type", "param", "code"}
        assert wrong.headers[TEST_ENDPOINT_HEADER] == "lexical"
        ranked = RerankClient(api_key=TEST_KEY, base_url=f"{url}/v1").rerank("France", DOCS)
        assert ranked[0].index == 1
        with pytest.raises(EndpointNotFoundError):
            RerankClient(api_key=TEST_KEY, base_url=f"{url}/proxy", max_retries=0).rerank(
                "France", DOCS
            )
        assert is_test_endpoint(url)
    assert len(endpoint.requests) == 1


@pytest.mark.loopback
def test_a_server_that_does_not_name_itself_is_not_taken_for_it() -> None:
    with serve_loopback(anonymous(LexicalRerankEndpoint())) as url:
        assert not is_test_endpoint(url)


def test_only_loopback_hosts_are_asked() -> None:
    # a remote host is never probed (this would fail under --block-network otherwise)
    assert not is_test_endpoint("https://api.together.ai")
    assert not is_test_endpoint("http://10.0.0.5:8000")


def test_a_client_hanging_up_mid_answer_prints_no_server_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # A client that resets the connection before its answer is written (the test-endpoint
    # check reads only the headers; a call cancelled by its deadline) made the loopback
    # server print socketserver's "Exception occurred during processing of request" with a
    # traceback into the user's stderr: the CLI's and demo's one-line errors got 20 lines.
    def hung_up(request: httpx.Request) -> httpx.Response:
        raise ConnectionResetError(104, "Connection reset by peer")

    with serve_loopback(hung_up) as url, pytest.raises(httpx.HTTPError):
        httpx.post(url + "/v1/rerank", json={}, timeout=5)
    assert capfd.readouterr().err == ""


def test_a_real_server_error_is_still_printed(capfd: pytest.CaptureFixture[str]) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in the test double")

    with serve_loopback(broken) as url, pytest.raises(httpx.HTTPError):
        httpx.post(url + "/v1/rerank", json={}, timeout=5)
    assert "a bug in the test double" in capfd.readouterr().err


@pytest.mark.loopback
def test_an_answer_is_not_held_back_by_nagle_and_delayed_acks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server wrote the status line and headers, then the body, on a socket with
    # Nagle's algorithm on: the body waited for the client's delayed ACK of the headers,
    # about 40 ms per answer on Linux (44 ms a call against 2 ms with TCP_NODELAY). Under
    # load that stall grew past the 0.3 s a failover test left a healthy secondary, whose
    # breaker then opened. Every connection the server accepts must have TCP_NODELAY.
    import socket

    from together_rerank_plugins import testing

    accepted: list[socket.socket] = []
    get_request = testing._LoopbackServer.get_request

    def recording(self: testing._LoopbackServer) -> tuple[socket.socket, object]:
        conn, address = get_request(self)
        accepted.append(conn)
        return conn, address

    monkeypatch.setattr(testing._LoopbackServer, "get_request", recording)
    with (
        serve_loopback() as url,
        RerankClient(api_key=TEST_KEY, base_url=url, max_retries=0) as rerank,
    ):
        for _ in range(3):  # kept alive: one connection serves the three calls
            assert rerank.rerank("capital of France", DOCS)[0].index == 1
        assert accepted, "the client reached the server on no connection"
        assert all(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for conn in accepted), (
            "an answer can wait ~40 ms for the client's delayed ACK (Nagle on)"
        )
