"""Device, site and metric identifiers: what a valid one looks like, checked before it is used as more than data.

An id is free data while it stays a value (a Parquet or Delta column, a bound SQL parameter). It
must pass here before it becomes part of anything parsed: a lake path or S3 key, an SQL literal
or identifier, a dbt variable, an AWS resource name (a CloudWatch alarm, an incident title). The
curated layer checks every line's ids (a bad one is quarantined with reason ``invalid_id``, never
curated), so nothing downstream of it ever sees one; the places that build names check again,
and fail naming the id.

Allowed: 1-64 characters of letters, digits, ``-``, ``_``, ``.`` and ``:``, starting with a letter
or digit: no ``/`` or ``..`` (path traversal), no quotes, ``;``, ``|``, whitespace or control
characters (SQL, key separators, log lines). Metrics are lower-case names (``temperature``).
"""

from __future__ import annotations

import re

KINDS = ("device", "site", "metric")
_ID = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"
PATTERNS = {
    "device": re.compile(_ID),
    "site": re.compile(_ID),
    "metric": re.compile(r"[a-z][a-z0-9_]{0,63}"),
}
# The same rules as regular expressions for engines that filter in bulk (Arrow's RE2).
ARROW_PATTERNS = {kind: f"^{p.pattern}$" for kind, p in PATTERNS.items()}


class InvalidIdentifier(ValueError):
    """An id that may not be used in a path, key, query or resource name."""


def id_problem(kind: str, value: object) -> str | None:
    """Why ``value`` is not a valid ``kind`` id, or None if it is."""
    if kind not in PATTERNS:
        raise ValueError(f"unknown id kind {kind!r}; one of {', '.join(KINDS)}")
    if not isinstance(value, str):
        return f"{kind} id {value!r} is a {type(value).__name__}, not a string"
    if PATTERNS[kind].fullmatch(value) is None or ".." in value:
        rule = (
            "lower-case letters, digits and '_', starting with a letter"
            if kind == "metric"
            else "letters, digits, '-', '_', '.' and ':', starting with a letter or digit, without '..'"
        )
        return f"invalid {kind} id {value!r}: 1-64 characters of {rule}"
    return None


def validate_id(kind: str, value: object) -> str:
    """``value`` if it is a valid ``kind`` id; otherwise InvalidIdentifier naming it."""
    problem = id_problem(kind, value)
    if problem:
        raise InvalidIdentifier(problem)
    return value  # type: ignore[return-value]
