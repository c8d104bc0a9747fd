"""The seed workflow, end to end: retrieve 20 candidates, rerank them, keep the best 5.

Run ``python -m together_rerank_plugins.demo``. For each question of a small bundled corpus
(``data/demo_corpus.json``, written for this demo) it retrieves 20 candidates with a
bag-of-words first stage, through LlamaIndex (``VectorStoreIndex`` retriever, then
``TogetherRerank.postprocess_nodes``) and through LangChain (``InMemoryVectorStore``
retriever, then ``TogetherRerank.compress_documents``), and prints the first-stage top 5 next
to the reranked top 5.

Mode: with ``TOGETHER_API_KEY`` set, the rerankers call Together (or the server named by
``TOGETHER_BASE_URL``) with the model from ``TOGETHER_RERANK_MODEL`` (default LlamaRank).
Without it, or with ``--offline``, they call the embedded lexical test endpoint of
:mod:`together_rerank_plugins.testing` in process: no network, and scores that are word
overlap, not LlamaRank's. The first line of output always says which mode ran.

The first stage is deliberately weak (a hashed bag-of-words embedding, the same for both
frameworks and with no model to download), which is what makes the reranker's work visible.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._client import RerankClient
from ._console import (
    error_line,
    is_test_endpoint,
    offline_client_options,
    positive_int,
    probe_timeout,
    run_console,
    test_endpoint_line,
)
from ._demo_pipelines import (
    DEFAULT_TOP_N,
    FIRST_STAGE_K,
    Comparison,
    Corpus,
    Hit,
    Passage,
    Question,
    load_corpus,
    run_langchain,
    run_llama_index,
)
from ._errors import RerankError
from ._install import install_hint

__all__ = [
    "FIRST_STAGE_K",
    "Comparison",
    "Corpus",
    "Hit",
    "Passage",
    "Question",
    "load_corpus",
    "main",
    "run_langchain",
    "run_llama_index",
]


OFFLINE_HEADER = (
    "mode: offline — embedded lexical test endpoint (not LlamaRank; scores are word-overlap, "
    "for demonstration). Set TOGETHER_API_KEY (and TOGETHER_RERANK_MODEL for your dedicated "
    "endpoint) to call Together."
)

MODULE_PROG = "python -m together_rerank_plugins.demo"

_TEXT_WIDTH = 60
_TITLE_WIDTH = 26


@dataclass(frozen=True)
class _Framework:
    name: str
    module: str
    extra: str
    pipeline: str
    run: Callable[..., list[Comparison]]


_FRAMEWORKS = (
    _Framework(
        "LlamaIndex",
        "llama_index.core",
        "llama-index",
        "VectorStoreIndex.as_retriever(similarity_top_k={k}) -> TogetherRerank(top_n={n})"
        ".postprocess_nodes",
        run_llama_index,
    ),
    _Framework(
        "LangChain",
        "langchain_core",
        "langchain",
        "InMemoryVectorStore.as_retriever(k={k}) -> TogetherRerank(top_n={n}).compress_documents",
        run_langchain,
    ),
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package is missing
        return False


# -- printing ------------------------------------------------------------------------------
def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _print_comparison(c: Comparison, number: int, top_n: int) -> None:
    p = print
    p(f"Q{number}. {c.question.text}")
    shown = c.candidates[:top_n]
    p(f"  first stage: top {len(shown)} of {len(c.candidates)} (score = cosine similarity)")
    p(f"     #  score  id    {'title':<{_TITLE_WIDTH}}  text")
    for h in shown:
        p(
            f"    {h.rank:>2}  {h.score:5.3f}  {h.passage.id:<5} "
            f"{_clip(h.passage.title, _TITLE_WIDTH):<{_TITLE_WIDTH}}  "
            f"{_clip(h.passage.text, _TEXT_WIDTH)}"
        )
    rest = c.candidates[top_n:]
    if rest:
        p(f"    ranks {rest[0].rank}-{rest[-1].rank}: " + " ".join(h.passage.id for h in rest))
    p(f"  reranked: top {len(c.reranked)} (score = relevance; from = first-stage rank)")
    p(f"     #  score  from  id    {'title':<{_TITLE_WIDTH}}  text")
    for h in c.reranked:
        p(
            f"    {h.rank:>2}  {h.score:5.3f}  {h.from_rank:>4}  {h.passage.id:<5} "
            f"{_clip(h.passage.title, _TITLE_WIDTH):<{_TITLE_WIDTH}}  "
            f"{_clip(h.passage.text, _TEXT_WIDTH)}"
        )
    p()


def _summary(results: dict[str, list[Comparison]]) -> str:
    changed = []
    answered = []
    for name, comps in results.items():
        n = len(comps)
        differ = sum(
            bool(c.reranked and c.candidates)
            and c.reranked[0].passage.id != c.candidates[0].passage.id
            for c in comps
        )
        before = sum(
            bool(c.candidates) and c.candidates[0].passage.id == c.question.answer_id for c in comps
        )
        after = sum(
            bool(c.reranked) and c.reranked[0].passage.id == c.question.answer_id for c in comps
        )
        changed.append(f"{differ}/{n} ({name})")
        answered.append(f"{before}/{n} -> {after}/{n} ({name})")
    return (
        "summary: top-1 changed by reranking in "
        + ", ".join(changed)
        + " questions; intended answer at top-1 before -> after reranking: "
        + ", ".join(answered)
        + "."
    )


# -- command line --------------------------------------------------------------------------
def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Retrieve 20 candidates per question from a small bundled corpus, rerank "
        "them with Together (LlamaRank) through LlamaIndex and LangChain, and compare the top "
        "passages before and after. Live when TOGETHER_API_KEY is set (TOGETHER_RERANK_MODEL, "
        "TOGETHER_BASE_URL are honoured); otherwise offline against an embedded lexical test "
        "endpoint.",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use the embedded lexical test endpoint even if TOGETHER_API_KEY is set",
    )
    parser.add_argument(
        "--questions", type=positive_int, metavar="N", help="run only the first N questions"
    )
    parser.add_argument(
        "--top-n",
        type=positive_int,
        default=DEFAULT_TOP_N,
        metavar="N",
        help=f"how many reranked passages to keep (default {DEFAULT_TOP_N}, "
        f"at most {FIRST_STAGE_K})",
    )
    return parser


def _mode(offline: bool) -> tuple[str, dict[str, Any]]:
    """The first output line and the rerankers' configuration."""
    if not offline and os.environ.get("TOGETHER_API_KEY", "").strip():
        with RerankClient() as client:  # resolves and validates the env configuration
            bound = probe_timeout(client.timeout, client.deadline)
            if is_test_endpoint(client._sdk.settings.base_url, timeout=bound):
                header = test_endpoint_line(client.base_url, client.model)
            else:
                header = f"mode: live — Together endpoint {client.base_url}, model {client.model}"
        return header, {}
    return OFFLINE_HEADER, offline_client_options()


def main(argv: Sequence[str] | None = None, *, prog: str = MODULE_PROG) -> int:
    """Run the demo; return the exit code (0, or 1 after a one-line error on stderr).

    ``prog`` is the command shown in ``--help`` and usage errors (``together-rerank demo``
    when run through the command line)."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if args.top_n > FIRST_STAGE_K:
        parser.error(f"--top-n must be at most {FIRST_STAGE_K} (the first-stage candidates)")
    try:
        corpus = load_corpus()
        questions = corpus.questions[: args.questions]
        header, rerank_kwargs = _mode(args.offline)
        print(header)
        print(
            f"corpus: {len(corpus.passages)} passages on {len(corpus.topics)} topics, written "
            f"for this demo; first stage: top {FIRST_STAGE_K} by a hashed bag-of-words "
            f"embedding; reranked: top {args.top_n}."
        )
        print()
        results: dict[str, list[Comparison]] = {}
        for fw in _FRAMEWORKS:
            if not _installed(fw.module):
                hint = install_hint(fw.extra)
                print(f"{fw.name}: skipped, not installed; run {hint} to include it.")
                continue
            print(f"=== {fw.name}: {fw.pipeline.format(k=FIRST_STAGE_K, n=args.top_n)} ===")
            print()
            comps = fw.run(corpus, questions, top_n=args.top_n, rerank_kwargs=rerank_kwargs)
            for number, comp in enumerate(comps, start=1):
                _print_comparison(comp, number, args.top_n)
            results[fw.name] = comps
    except RerankError as exc:
        print(error_line(exc), file=sys.stderr)
        return 1
    if not results:
        print(
            f"error: neither LlamaIndex nor LangChain is installed; run {install_hint('all')}.",
            file=sys.stderr,
        )
        return 1
    print(_summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_console(main))
