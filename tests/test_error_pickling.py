"""Every public exception survives pickling with its message and fields, so an error raised
in a worker process (``ProcessPoolExecutor``, ``multiprocessing``, Celery) reaches the parent
typed instead of breaking the pool."""

from __future__ import annotations

import inspect
import multiprocessing
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import httpx
import pytest

import together_rerank_plugins as trp
import together_rerank_plugins.evaluation as trp_evaluation
from together_rerank_plugins import RerankClient

from .conftest import TEST_KEY

#: every exception class the package and its public subpackages export: a new one is covered
#: without editing this file (the evaluation package is imported, so its errors are in the tree)
PUBLIC_ERRORS = sorted(
    {
        obj
        for module in (trp, trp_evaluation)
        for name in module.__all__
        if isinstance(obj := getattr(module, name), type) and issubclass(obj, BaseException)
    },
    key=lambda cls: cls.__name__,
)


def _tree(cls: type[BaseException]) -> set[type[BaseException]]:
    return {cls}.union(*(_tree(sub) for sub in cls.__subclasses__()))


def test_the_public_api_exports_the_whole_error_tree() -> None:
    # so that PUBLIC_ERRORS, and the test below, cover every error the package defines
    ours = {c for c in _tree(trp.RerankError) if c.__module__.startswith("together_rerank")}
    assert ours == set(PUBLIC_ERRORS)
    assert len(PUBLIC_ERRORS) >= 14


def _field_value(name: str, annotation: Any) -> Any:
    """A value for a constructor field, unlike any default, of the annotated type."""
    text = str(annotation)
    if "int" in text and "float" not in text:
        return 418
    if "float" in text:
        return 2.5
    return f"value of {name}"


def _instance(cls: type[BaseException]) -> BaseException:
    """``cls`` built with a message and every keyword field set (optional ones included)."""
    fields = {
        name: _field_value(name, param.annotation)
        for name, param in inspect.signature(cls.__init__).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
    }
    return cls("The message says what to do.", **fields)


@pytest.mark.parametrize("cls", PUBLIC_ERRORS, ids=lambda cls: cls.__name__)
def test_every_public_error_round_trips_through_pickle(cls: type[BaseException]) -> None:
    err = _instance(cls)
    if sys.version_info >= (3, 11):
        err.add_note("a note added on the way up")  # kept too (it lives in __dict__)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(err, protocol=protocol))
        assert type(back) is cls
        assert str(back) == str(err)
        assert back.args == err.args
        assert vars(back) == vars(err)  # status_code, server_message, location, ...


def test_status_fields_survive_pickling() -> None:
    err = trp.RateLimitError("Rate limited.", status_code=429, server_message="slow down")
    back = pickle.loads(pickle.dumps(err))
    assert (back.status_code, back.server_message) == (429, "slow down")
    redirect = trp.CrossOriginRedirectError(
        "Refused.", status_code=302, location="https://***@elsewhere.example/v1"
    )
    back_redirect = pickle.loads(pickle.dumps(redirect))
    assert back_redirect.location == "https://***@elsewhere.example/v1"
    assert back_redirect.status_code == 302


def _rerank_in_worker(status: int) -> list[float]:
    """Runs in the worker process: a rerank call against an endpoint answering ``status``."""
    answer = httpx.MockTransport(
        lambda request: httpx.Response(
            status, headers={"retry-after": "7"}, json={"error": {"message": "busy"}}
        )
    )
    client = RerankClient(api_key=TEST_KEY, transport=answer, max_retries=0)
    return [r.relevance_score for r in client.rerank("q", ["a document"])]


def test_a_worker_process_error_reaches_the_parent_typed() -> None:
    # spawn: a fresh interpreter, as on macOS and Windows (and never a fork of pytest's threads)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        with pytest.raises(trp.RateLimitError) as info:
            pool.submit(_rerank_in_worker, 429).result(timeout=120)
        assert info.value.status_code == 429
        assert info.value.server_message == "busy"
        with pytest.raises(trp.ServerError) as server:
            pool.submit(_rerank_in_worker, 503).result(timeout=120)  # the pool still works
        assert server.value.status_code == 503
