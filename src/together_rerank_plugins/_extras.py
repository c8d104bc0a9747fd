"""What a compatible server may need beyond Together's documented request: extra body
fields (``extra_body``) and headers (``default_headers``), validated once at construction.

Together's published request schema for ``/v1/rerank`` allows exactly six properties, so the
client sends nothing else unless the user asked for it here. Self-hosted servers (vLLM and
others) and gateways may take more: an instruction for an instruction-following reranker, a
routing header.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from ._errors import RerankConfigError

__all__ = [
    "DOCUMENTED_REQUEST_FIELDS",
    "check_default_headers",
    "check_extra_body",
    "check_header_text",
    "read_only",
]

#: The request properties of Together's documented ``/v1/rerank`` schema: the client sets
#: them from its own arguments, so ``extra_body`` may not.
DOCUMENTED_REQUEST_FIELDS = frozenset(
    {"model", "query", "documents", "top_n", "return_documents", "rank_fields"}
)
#: Headers the SDK sets itself (the key goes through ``api_key``).
_RESERVED_HEADERS = frozenset(
    {"authorization", "content-type", "content-length", "host", "transfer-encoding"}
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def check_extra_body(extra_body: Any) -> dict[str, Any] | None:
    """Validate ``extra_body``: a JSON-serialisable mapping whose keys the client does not
    set itself. Returns a private copy (the caller's mapping may change later)."""
    if extra_body is None:
        return None
    if not isinstance(extra_body, Mapping):
        raise RerankConfigError(
            f"`extra_body` must be a mapping of extra request fields (e.g. "
            f"{{'instruction': '...'}}) or None; got {type(extra_body).__name__}."
        )
    bad_keys = [k for k in extra_body if not isinstance(k, str) or not k]
    if bad_keys:
        raise RerankConfigError(f"`extra_body` keys must be non-empty strings; got {bad_keys!r}.")
    owned = sorted(DOCUMENTED_REQUEST_FIELDS & set(extra_body))
    if owned:
        raise RerankConfigError(
            f"`extra_body` may not set {owned}: the client sets the documented request "
            "fields itself (model, query, documents, top_n, return_documents, rank_fields); "
            "use the matching arguments instead."
        )
    try:
        text = json.dumps(extra_body, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise RerankConfigError(f"`extra_body` cannot be sent as JSON: {exc}.") from None
    copy: dict[str, Any] = json.loads(text)
    return copy


def _describe(char: str) -> tuple[str, str]:
    """What a character HTTP cannot carry is, and what to do about it, without showing a
    visible one (it may be a character of a secret): invisible ones are named by code
    point, as that is how to find them."""
    code = f"U+{ord(char):04X}"
    if char == "\ufeff":
        return (
            f"a byte-order mark ({code})",
            "the file it was read from was saved as 'UTF-8 with BOM': read it with "
            "encoding='utf-8-sig', or save it without one",
        )
    category = unicodedata.category(char)
    if category == "Cs":  # a byte that was not UTF-8, as Python decodes file names and env
        return (
            "a byte that is not UTF-8 text",
            "the file or variable was saved in another encoding (or holds a stray byte): fix it",
        )
    if category == "Cc":
        return f"a control character ({code})", "delete it from the file or variable"
    if category in ("Cf", "Zs", "Zl", "Zp"):
        name = unicodedata.name(char, "")
        return (
            f"an invisible character ({code}{' ' + name if name else ''})",
            "such characters come along when a key is copied from a web page or document; "
            "delete it",
        )
    return (
        "a non-ASCII character (not shown: it may be part of a secret)",
        "fix the file or variable it comes from",
    )


def check_header_text(text: str, what: str) -> str:
    """``text`` without surrounding whitespace (a key or token read from a file ends with a
    newline; HTTP ignores whitespace around a header value anyway), or
    :class:`RerankConfigError` for a character HTTP headers cannot carry: httpx sends them as
    ASCII, so one would fail every request with a ``UnicodeEncodeError`` holding the whole
    value. The error names ``what`` (the setting) and the position, never the value."""
    stripped = text.strip()
    if stripped.isascii() and stripped.isprintable():  # the common case, two C scans
        return stripped
    offset = len(text) - len(text.lstrip())
    for i, char in enumerate(stripped):
        if not (char.isascii() and (char.isprintable() or char == "\t")):
            position = offset + i
            where = "0 (its first character)" if position == 0 else f"{position} (from 0)"
            found, fix = _describe(char)
            raise RerankConfigError(
                f"{what} has {found} at position {where}: {fix}. HTTP headers carry ASCII "
                "only, so no request could be sent with it. (The value is not shown.)"
            )
    return stripped


def check_default_headers(headers: Any) -> dict[str, str] | None:
    """Validate ``default_headers``: string names and values, none the SDK sets itself.
    Values are never quoted in the errors (they may hold a gateway token)."""
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise RerankConfigError(
            f"`default_headers` must be a mapping of header names to strings or None; got "
            f"{type(headers).__name__}."
        )
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise RerankConfigError(f"`default_headers`: {name!r} is not a valid header name.")
        if name.lower() in _RESERVED_HEADERS:
            hint = " (pass the key as `api_key`)" if name.lower() == "authorization" else ""
            raise RerankConfigError(
                f"`default_headers` may not set {name!r}: the client sets it itself{hint}."
            )
        if not isinstance(value, str) or "\r" in value.strip() or "\n" in value.strip():
            raise RerankConfigError(
                f"`default_headers`: the value of {name!r} must be a single-line string."
            )
        out[name] = check_header_text(value, f"`default_headers`: the value of {name!r}")
    return out


# -- settings that cannot be changed in place -----------------------------------------------
def _refuse(name: str) -> NoReturn:
    raise TypeError(
        f"`{name}` cannot be changed in place: the value shown must be the value sent. Assign "
        f"a new one to the adapter (`rerank.{name} = ...`, applied from the next call) or use "
        f"`with_options({name}=...)`; a RerankClient's settings are fixed: build a new one."
    )


class ReadOnlyDict(dict[str, Any]):
    """A setting's mapping (``extra_body``, ``default_headers``) that refuses changes in
    place, which would show a value that is not sent. A ``dict`` still: JSON, pydantic,
    ``==`` and ``**`` see one."""

    __slots__ = ("_setting",)

    def __init__(self, items: Mapping[str, Any], setting: str) -> None:
        super().__init__(items)
        self._setting = setting

    def __reduce__(self) -> Any:  # pickle and copy rebuild it whole, not item by item
        return (type(self), (dict(self), self._setting))

    def __setitem__(self, key: Any, value: Any) -> None:
        _refuse(self._setting)

    def __delitem__(self, key: Any) -> None:
        _refuse(self._setting)

    def __ior__(self, other: Any) -> NoReturn:  # type: ignore[misc]
        _refuse(self._setting)

    def clear(self) -> None:
        _refuse(self._setting)

    def pop(self, *args: Any) -> Any:
        _refuse(self._setting)

    def popitem(self) -> Any:
        _refuse(self._setting)

    def setdefault(self, *args: Any) -> Any:
        _refuse(self._setting)

    def update(self, *args: Any, **kwargs: Any) -> None:
        _refuse(self._setting)


class ReadOnlyList(list[Any]):
    """A setting's list (``rank_fields``, a list inside ``extra_body``) that refuses changes
    in place. A ``list`` still, for JSON, pydantic and ``==``."""

    __slots__ = ("_setting",)

    def __init__(self, items: Iterable[Any], setting: str) -> None:
        super().__init__(items)
        self._setting = setting

    def __reduce__(self) -> Any:
        return (type(self), (list(self), self._setting))

    def __setitem__(self, index: Any, value: Any) -> None:
        _refuse(self._setting)

    def __delitem__(self, index: Any) -> None:
        _refuse(self._setting)

    def __iadd__(self, other: Any) -> NoReturn:  # type: ignore[misc]
        _refuse(self._setting)

    def __imul__(self, other: Any) -> NoReturn:  # type: ignore[misc]
        _refuse(self._setting)

    def append(self, value: Any) -> None:
        _refuse(self._setting)

    def extend(self, values: Any) -> None:
        _refuse(self._setting)

    def insert(self, index: Any, value: Any) -> None:
        _refuse(self._setting)

    def remove(self, value: Any) -> None:
        _refuse(self._setting)

    def pop(self, *args: Any) -> Any:
        _refuse(self._setting)

    def clear(self) -> None:
        _refuse(self._setting)

    def sort(self, *args: Any, **kwargs: Any) -> None:
        _refuse(self._setting)

    def reverse(self) -> None:
        _refuse(self._setting)


def read_only(value: Any, setting: str) -> Any:
    """``value`` with every mapping and list in it, at any depth, made read-only (copies:
    the caller's objects are left as they are)."""
    if isinstance(value, Mapping):
        return ReadOnlyDict({k: read_only(v, setting) for k, v in value.items()}, setting)
    if isinstance(value, (list, tuple)):
        return ReadOnlyList((read_only(v, setting) for v in value), setting)
    return value
