"""``python -m together_rerank_plugins.cli``: the ``together-rerank`` command."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
