r"""Long documents: a token estimate that does not undercount, and overlapping windows.

A rerank model reads the query and the document together under a per-document token
budget (8,192 for Llama-Rank, 32,768 for Mxbai). What the server does past it is
undocumented, so we never rely on it: an over-long document is split into overlapping
windows (``"chunk"``, the default: each window is scored and the document gets its best
window's score), cut (``"truncate"``), or refused (``"error"``).

The estimate. Without the model's tokenizer we bound the count from above, per character
class, using what BPE tokenizers of the Llama 3 / cl100k family do at worst on real text:

- ASCII letters and digits: 1 token per 3 characters of a word, at least 1 per word
  (BPE merges common words into one token), per hump of a camelCase word; a run of digits
  is cut in groups of up to 3 and does not merge with the space before it, so it costs one
  more; a word mixing letters and digits (hashes, UUIDs, base64, ``\uXXXX``) costs one
  token per character;
- ASCII punctuation and symbols: 1 token each (they often merge, never split);
- whitespace: 1 token per newline, 1 per 4 other whitespace characters (runs of spaces in
  code merge, single spaces attach to the next word);
- any other character: its UTF-8 length / 2, rounded up (accented letters 1, CJK 2 —
  cl100k spends 1 or 2); Greek, Cyrillic and other 2-byte scripts 2, 4-byte characters
  such as emoji 3 (byte-level fallback).

``tests/test_longdocs.py`` checks that the estimate is at least the cl100k_base count (the
tokenizer Llama 3's is derived from, shipped offline by llama-index-core) on English prose,
source code and Chinese/Japanese text. Pass ``tokenizer=`` (a function returning a token
count) to use the model's real tokenizer instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "LONG_DOCUMENT_POLICIES",
    "TokenCounter",
    "estimate_tokens",
    "split_windows",
    "truncate",
]

TokenCounter = Callable[[str], int]
LONG_DOCUMENT_POLICIES = ("chunk", "truncate", "error")

_WORD = re.compile(r"[A-Za-z0-9]+")


_HUMP = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


def _word_tokens(word: str) -> int:
    if word.isdigit():
        return -(-len(word) // 3) + 1
    if any(c.isdigit() for c in word):  # hashes, ids, base64, \uXXXX escapes: no merges
        return len(word)
    if word.islower() or word.isupper() or word[1:].islower():
        return max(1, -(-len(word) // 3))
    return sum(max(1, -(-len(h) // 3)) for h in _HUMP.findall(word))  # camelCase humps


def estimate_tokens(text: str) -> int:
    """An upper-bound estimate of the tokens in ``text`` (see the module docstring)."""
    total = 0
    for match in _WORD.finditer(text):
        total += _word_tokens(match.group())
    spaces = 0
    for ch in _WORD.sub("", text):
        if ch == "\n":
            total += 1
        elif ch.isspace() and ord(ch) < 128:
            spaces += 1
        elif ord(ch) < 128:
            total += 1
        else:
            size = len(ch.encode("utf-8"))
            if size == 4 or 0x370 <= ord(ch) < 0x800:  # emoji; Greek, Cyrillic, ...: bytes
                total += min(size, 3)
            else:
                total += -(-size // 2)
    return total + -(-spaces // 4)


def _fit(text: str, start: int, guess: int, budget: int, count: TokenCounter) -> int:
    """A window length from ``start`` that fits ``budget``: start from ``guess`` characters,
    shrink by 10% until it fits, then end at whitespace if one is in the last fifth."""
    length = max(1, min(guess, len(text) - start))
    while length > 1 and count(text[start : start + length]) > budget:
        length = max(1, int(length * 0.9))
    if start + length < len(text):
        window = text[start : start + length]
        cut = max(window.rfind(" ", int(length * 0.8)), window.rfind("\n", int(length * 0.8)))
        if cut > 0:
            length = cut + 1
    return length


def split_windows(
    text: str, budget: int, count: TokenCounter, *, overlap: float = 0.1, total: int | None = None
) -> list[str]:
    """Split ``text`` into windows of at most ``budget`` tokens that overlap by ``overlap``.

    Every character of ``text`` is in at least one window, in text order. The counter is
    called about twice per window, so a 1 MB document costs a few passes over its text.
    """
    if budget < 1:
        raise ValueError("budget must be >= 1")
    total = count(text) if total is None else total
    if total <= budget:
        return [text]
    chars_per_token = len(text) / max(total, 1)
    guess = max(1, int(budget * chars_per_token * 0.95))
    windows: list[str] = []
    start = 0
    while start < len(text):
        length = _fit(text, start, guess, budget, count)
        windows.append(text[start : start + length])
        if start + length >= len(text):
            break
        nxt = start + max(1, int(length * (1.0 - overlap)))
        # start the next window after a whitespace inside the overlap, not mid-word
        space = max(
            text.rfind(" ", nxt - int(length * overlap), nxt),
            text.rfind("\n", nxt - int(length * overlap), nxt),
        )
        start = space + 1 if space > start else nxt
    return windows


def truncate(text: str, budget: int, count: TokenCounter) -> str:
    """The longest prefix of ``text`` (ending at whitespace where possible) within ``budget``."""
    if count(text) <= budget:
        return text
    chars_per_token = len(text) / max(count(text), 1)
    guess = max(1, int(budget * chars_per_token * 0.95))
    return text[: _fit(text, 0, guess, budget, count)]
