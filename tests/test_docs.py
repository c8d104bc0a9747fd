"""Every ```python example in README.md and docs/*.md runs, as a user would run it.

Each file's examples run in order, in one fresh subprocess, with the environment a user
would have set: TOGETHER_API_KEY (a placeholder) and TOGETHER_BASE_URL pointing at the
embedded lexical endpoint served on 127.0.0.1 (not Together). Examples that need an LLM or
an embedding model get LlamaIndex's MockLLM/MockEmbedding through ``Settings``, the way a
user's own configuration would reach them; the prelude below is the only hidden code.
A block whose first line is ``# not run`` is skipped (shell-only or live-only snippets).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from together_rerank_plugins.testing import serve_loopback

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

PRELUDE = """\
try:
    from llama_index.core import Settings
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM

    Settings.llm = MockLLM()
    Settings.embed_model = MockEmbedding(embed_dim=16)
except ImportError:
    pass
"""


def blocks(path: Path) -> list[str]:
    return [b for b in BLOCK.findall(path.read_text()) if not b.startswith("# not run")]


@pytest.mark.loopback
@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_doc_examples_run(path: Path, tmp_path: Path) -> None:
    code = blocks(path)
    if not code:
        pytest.skip(f"{path.name} has no python examples")
    script = tmp_path / f"{path.stem}_examples.py"
    script.write_text(PRELUDE + "\n\n".join(code))
    with serve_loopback() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
        env |= {"TOGETHER_API_KEY": "docs-example-placeholder-key", "TOGETHER_BASE_URL": url}
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, f"{path.name} examples failed:\n{proc.stdout}\n{proc.stderr}"
