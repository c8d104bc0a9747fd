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
- a run of more than 20 letters is not language (DNA, protein, base32 ids): 2 tokens per
  3 letters (cl100k spends one per 1.7-1.9);
- any other character: its UTF-8 length (byte-level BPE never spends more than a token per
  byte), except the common CJK ideographs, kana, Hangul syllables and full-width forms of
  real text: 2 (cl100k spends 1 or 2).

Random letter strings shorter than that (random ids, passwords) and random rare CJK
ideographs can still cost more than this estimate: for such corpora pass ``tokenizer=``.

``tests/test_longdocs.py`` checks that the estimate is at least the cl100k_base count (the
tokenizer Llama 3's is derived from, shipped offline by llama-index-core) on English prose,
source code and Chinese/Japanese text. Pass ``tokenizer=`` (a function returning a token
count) to use the model's real tokenizer instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "ESTIMATE_MAX_PER_CHAR",
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
#: tokens per character that :func:`estimate_tokens` never exceeds (a 4-byte character),
#: so a text of ``n`` characters whose ``n * ESTIMATE_MAX_PER_CHAR`` fits needs no count
ESTIMATE_MAX_PER_CHAR = 4
#: letters in a row beyond which a "word" is not language and BPE merges little
_LONGEST_WORD = 20


def _common_wide(code: int) -> bool:
    """CJK ideographs, kana, Hangul syllables, CJK punctuation and full-width forms: 3-byte
    characters that real text uses and cl100k spends 1 or 2 tokens on."""
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3000 <= code <= 0x30FF
        or 0xAC00 <= code <= 0xD7A3
        or 0xFF00 <= code <= 0xFFEF
    )


def _word_tokens(word: str) -> int:
    if word.isdigit():
        return -(-len(word) // 3) + 1
    if any(c.isdigit() for c in word):  # hashes, ids, base64, \uXXXX escapes: no merges
        return len(word)
    if len(word) > _LONGEST_WORD:  # no language: DNA, protein, base32 ids (~1.7-1.9 chars)
        return -(-len(word) * 2 // 3)
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
            # byte-level BPE never spends more than one token per byte; only the common
            # CJK, kana and Hangul characters of real text are known to merge
            total += 2 if size == 3 and _common_wide(ord(ch)) else size
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
