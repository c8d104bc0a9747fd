"""Native fit: LlamaIndex's import path, a LangChain cross-encoder, serialization, pickling."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.load import dumpd, dumps, load, loads
from llama_index.core.schema import NodeWithScore, TextNode

from together_rerank_plugins import RerankConfigError
from together_rerank_plugins.langchain import TogetherCrossEncoder
from together_rerank_plugins.langchain import TogetherRerank as LCRerank
from together_rerank_plugins.llama_index import TogetherRerank as LIRerank
from together_rerank_plugins.testing import LexicalRerankEndpoint, lexical_scores

from .conftest import TEST_KEY


# -- llama_index.postprocessor.together_rerank ---------------------------------------------
def test_llama_index_namespace_import_is_the_same_class() -> None:
    from llama_index.postprocessor.together_rerank import TogetherRerank

    assert TogetherRerank is LIRerank


def test_namespace_portion_coexists_with_other_postprocessor_packages(tmp_path: Path) -> None:
    other = tmp_path / "llama_index" / "postprocessor" / "other_rerank"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("NAME = 'other'\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from llama_index.postprocessor.other_rerank import NAME\n"
        "from llama_index.postprocessor.together_rerank import TogetherRerank\n"
        "import llama_index.core\n"
        "print(NAME, TogetherRerank.class_name())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["other", "TogetherRerank"]


# -- TogetherCrossEncoder ------------------------------------------------------------------
def test_cross_encoder_scores_every_pair_in_order_grouping_by_query() -> None:
    endpoint = LexicalRerankEndpoint()
    encoder = TogetherCrossEncoder(api_key=TEST_KEY, transport=endpoint)
    pairs = [
        ("red apples", "green pears"),
        ("green pears", "green pears and red apples"),
        ("red apples", "red apples"),
        ("red apples", "green pears"),  # a repeated pair gets the same score
    ]
    scores = encoder.score(pairs)
    apples = lexical_scores("red apples", ["green pears", "red apples"])
    pears = lexical_scores("green pears", ["green pears and red apples"])
    assert scores == [apples[0], pears[0], apples[1], apples[0]]
    assert len(endpoint.requests) == 2  # one request per distinct query
    # the repeated pair is scored once (dedupe), not sent twice
    assert endpoint.requests[0]["documents"] == ["green pears", "red apples"]


def test_cross_encoder_works_in_langchain_cross_encoder_reranker() -> None:
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker

    encoder = TogetherCrossEncoder(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
    reranker = CrossEncoderReranker(model=encoder, top_n=1)
    docs = [Document("green pears", id="p"), Document("red apples", id="a")]
    assert [d.id for d in reranker.compress_documents(docs, "red apples")] == ["a"]


def test_cross_encoder_rejects_non_pairs_and_hides_its_key() -> None:
    encoder = TogetherCrossEncoder(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
    with pytest.raises(ValueError, match=r"text_pairs\[0\]"):
        encoder.score(["not a pair"])  # type: ignore[list-item]
    assert TEST_KEY not in repr(encoder)
    assert TEST_KEY not in encoder.model_dump_json()
    with pytest.raises(RerankConfigError, match="unknown argument"):
        TogetherCrossEncoder(api_key=TEST_KEY, top_k=3)


# -- LangChain Serializable ----------------------------------------------------------------
def test_langchain_dumpd_and_load_round_trip_without_the_key() -> None:
    rerank = LCRerank(api_key=TEST_KEY, top_n=3, model="my-org/reranker", score_threshold=0.2)
    data = dumpd(rerank)
    text = dumps(rerank)
    assert TEST_KEY not in json.dumps(data)
    assert TEST_KEY not in text
    assert data["id"] == ["together_rerank_plugins", "langchain", "TogetherRerank"]
    assert data["kwargs"]["together_api_key"] == {
        "lc": 1,
        "type": "secret",
        "id": ["TOGETHER_API_KEY"],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # langchain_core marks load() as beta
        again = load(
            data,
            secrets_map={"TOGETHER_API_KEY": "another-key-0123456789"},
            valid_namespaces=["together_rerank_plugins"],
            allowed_objects=[LCRerank],
        )
        from_text = loads(
            text,
            secrets_map={"TOGETHER_API_KEY": "another-key-0123456789"},
            valid_namespaces=["together_rerank_plugins"],
            allowed_objects=[LCRerank],
        )
    for obj in (again, from_text):
        assert isinstance(obj, LCRerank)
        assert (obj.top_n, obj.model, obj.score_threshold) == (3, "my-org/reranker", 0.2)
        assert obj.client.model == "my-org/reranker"


# -- pickling ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [LIRerank, LCRerank, TogetherCrossEncoder])
def test_pickle_round_trips_without_the_key(cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    top_n = None if cls is TogetherCrossEncoder else 2  # the encoder scores every pair
    original = cls(
        api_key=TEST_KEY, top_n=top_n, model="my-org/reranker", transport=LexicalRerankEndpoint()
    )
    blob = pickle.dumps(original)
    assert TEST_KEY.encode() not in blob
    monkeypatch.setenv("TOGETHER_API_KEY", "key-from-the-environment")
    again = pickle.loads(blob)
    assert (again.top_n, again.model) == (top_n, "my-org/reranker")
    assert again.client is not original.client  # rebuilt, not shared


def test_cross_encoder_refuses_options_it_cannot_apply() -> None:
    for bad in ({"top_n": 3}, {"score_threshold": 0.5}, {"on_error": "fallback"}):
        with pytest.raises(RerankConfigError, match="CrossEncoderReranker"):
            TogetherCrossEncoder(api_key=TEST_KEY, **bad)


def test_cross_encoder_scores_copies_alike_even_with_surrogates() -> None:
    encoder = TogetherCrossEncoder(api_key=TEST_KEY, transport=LexicalRerankEndpoint())
    a, b = "caf\udc80 a", "caf\udc81 a"  # distinct as given, identical as sent (U+FFFD)
    assert encoder.score([("a", a), ("a", b)]) == [1.0, 1.0]


def test_unpickling_without_a_key_says_where_to_put_it() -> None:
    blob = pickle.dumps(LCRerank(api_key=TEST_KEY))
    with pytest.raises(RerankConfigError, match="TOGETHER_API_KEY") as caught:
        pickle.loads(blob)
    # not "pass api_key=...": the caller did; the key is what a pickle never carries
    assert "keys are never pickled" in str(caught.value)


@pytest.mark.parametrize("cls", [LIRerank, LCRerank])
def test_loading_a_pickle_made_with_a_key_argument_says_which_key_it_uses(
    cls: type, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A tenant's key passed as an argument is not in the pickle: in a worker whose
    environment holds another key, the loaded adapter calls with that one. It used to do
    so silently; it now says so (once per process), and a pickle of an adapter that took
    its key from the environment loads quietly, as before."""
    import together_rerank_plugins._fields as fields

    monkeypatch.setattr(fields, "_WARNED_KEY_FROM_ENV", set())
    endpoint = LexicalRerankEndpoint(api_keys={"service-key"})
    monkeypatch.setenv("TOGETHER_API_KEY", "service-key")
    from_env = pickle.dumps(cls(transport=endpoint))
    tenant = pickle.dumps(cls(api_key="tenant-a-key", transport=endpoint))
    assert b"tenant-a-key" not in tenant
    caplog.set_level(logging.WARNING, logger="together_rerank_plugins")
    pickle.loads(from_env)
    assert caplog.records == []
    for _ in range(2):
        pickle.loads(tenant)
    (warned,) = caplog.records  # once per process
    assert "pickled with an `api_key` argument" in warned.getMessage()
    assert "TOGETHER_API_KEY" in warned.getMessage()
    assert all("tenant-a-key" not in r.getMessage() for r in caplog.records)


def test_llama_index_to_dict_from_dict_and_pickle_keep_working_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rerank = LIRerank(api_key=TEST_KEY, top_n=1, score_threshold=0.1)
    monkeypatch.setenv("TOGETHER_API_KEY", TEST_KEY)
    for again in (LIRerank.from_dict(rerank.to_dict()), LIRerank.from_json(rerank.to_json())):
        assert again.to_dict() == rerank.to_dict()
    endpoint = LexicalRerankEndpoint()
    unpickled = pickle.loads(pickle.dumps(LIRerank(api_key=TEST_KEY, top_n=1, transport=endpoint)))
    # the transport is not pickled (it may hold connections): the copy talks to the network
    assert unpickled.transport is None
    assert unpickled.top_n == 1
    # and the unpickled instance is fully usable once given a transport again
    nodes = [NodeWithScore(node=TextNode(text=t)) for t in ["red apples", "green pears"]]
    usable = unpickled.with_options(transport=endpoint)
    best = usable.postprocess_nodes(nodes, query_str="pears")
    assert best[0].node.get_content() == "green pears"
