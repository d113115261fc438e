"""What a JSON value may hold before Gatehouse stores or evaluates it.

PostgreSQL refuses NUL in text and JSON, and UTF-8 has no encoding for a lone surrogate
(`"\\udfff"` in JSON): either would fail at the INSERT, after validation, as a 500. NaN and the
infinities are not JSON numbers and would pass a schema's `minimum` and the rules' comparisons
in surprising ways. So every way a payload comes in (the API, a reviewer's edit, the service
functions themselves) refuses them up front, naming the field, and nothing is rewritten.
"""

from __future__ import annotations

import math
from typing import Any

from foundation.errors import ApplicationError

MAX_DEPTH = 64


class BadValue(ValueError):
    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(f"{dotted(loc)}: {msg}" if loc else msg)
        self.loc = loc
        self.msg = msg

    def refusal(self, *, status: int = 422, prefix: tuple[str, ...] = ()) -> ApplicationError:
        """The problem+json answer: 4xx, naming the field; nothing was stored."""
        return ApplicationError(
            f"{dotted(self.loc) or 'The body'}: {self.msg}. Nothing was stored.",
            status=status,
            code="bad-value",
            errors=[{"loc": [*prefix, *self.loc], "msg": self.msg}],
        )


def dotted(loc: tuple[str | int, ...]) -> str:
    """`payload.items[2].sku`, for messages people read."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains the NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode text"
    return None


def check(value: Any, loc: tuple[str | int, ...] = (), depth: int = 0) -> None:
    """Raise BadValue naming the first field that holds NUL, a lone surrogate, NaN or an
    infinity, or that nests deeper than MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise BadValue(loc, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        problem = _text_problem(value)
        if problem:
            raise BadValue(loc, problem)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadValue(loc, f"{value} is not a JSON number (NaN and infinities are refused)")
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (problem := _text_problem(key)):
                raise BadValue(loc, f"a key {problem}")
            check(item, (*loc, key), depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check(item, (*loc, index), depth + 1)
