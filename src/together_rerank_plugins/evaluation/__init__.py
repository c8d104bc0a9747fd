"""Is reranking worth it on *my* data, and how deep should I retrieve?

:func:`evaluate_reranking` runs your own retriever (LlamaIndex, LangChain, or a function)
and reranker (either adapter's ``TogetherRerank``, or a ``RerankClient``) over judged
queries (:func:`load_dataset`, :class:`EvalDataset`) in one scoring pass, and returns a
:class:`RerankEvaluation`: quality per depth with bootstrap intervals, cost and latency,
and a :class:`Recommendation` with settings to paste. See docs/evaluation.md.

Importing this module imports neither framework, nor scipy, matplotlib or pytrec_eval
(they load when an evaluation runs: ``pip install ".[eval]"`` in a clone).
"""

from ._data import SAMPLE, SAMPLE_PATH, EvalDataset, load_dataset
from ._errors import EvaluationError
from ._report import DepthResult, Recommendation, RerankEvaluation, recommend, score_threshold
from ._run import DEFAULT_CANDIDATES, aevaluate_reranking, evaluate_reranking

__all__ = [
    "DEFAULT_CANDIDATES",
    "SAMPLE",
    "SAMPLE_PATH",
    "DepthResult",
    "EvalDataset",
    "EvaluationError",
    "Recommendation",
    "RerankEvaluation",
    "aevaluate_reranking",
    "evaluate_reranking",
    "load_dataset",
    "recommend",
    "score_threshold",
]
