"""The docstring examples of the installed package run (editable install or not).

They used to be collected with ``--doctest-modules`` over ``src/``, which imports the files
under ``src/`` as a second copy of the package whenever the installed one is not an editable
install of this checkout (an sdist, a wheel): pytest then stops with "import file mismatch".
Here they run against whatever ``import together_rerank_plugins`` finds.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import together_rerank_plugins

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
MODULES = [
    info.name
    for info in pkgutil.walk_packages(together_rerank_plugins.__path__, "together_rerank_plugins.")
    if not info.name.endswith("__main__")
]
MODULES = ["together_rerank_plugins", *MODULES, "llama_index.postprocessor.together_rerank"]


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    found: list[doctest.DocTest] = []
    for name in MODULES:
        found += [t for t in finder.find(importlib.import_module(name)) if t.examples]
    return sorted(found, key=lambda t: t.name)


DOCTESTS = _doctests()


@pytest.mark.loopback  # the testing module's example serves on 127.0.0.1
@pytest.mark.parametrize("test", DOCTESTS, ids=lambda t: t.name)
def test_docstring_example(test: doctest.DocTest) -> None:
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(test, out=report.append, clear_globs=True)
    assert result.attempted == len(test.examples)
    assert result.failed == 0, "".join(report)


def test_documented_modules_have_examples() -> None:
    """The finder sees the examples the public classes carry (a guard against finding none)."""
    modules = {t.name.rsplit(".", 1)[0] for t in DOCTESTS} | {t.name for t in DOCTESTS}
    for name in (
        "together_rerank_plugins.testing",
        "together_rerank_plugins._client.RerankClient",
        "together_rerank_plugins.llama_index.TogetherRerank",
        "together_rerank_plugins.langchain.TogetherRerank",
    ):
        assert name in modules, f"no docstring example found in {name}"
