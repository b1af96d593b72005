"""Durations and byte counts as people write and read them."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, Field

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_PATTERN = r"^(0|(\d+(\.\d+)?(ms|s|m|h|d|w))+)$"
"""What a duration looks like: Go's style (``1h30m``) plus days and weeks, lower case, no
spaces. :func:`parse_duration` reads exactly this, and the Prefect UI's form checks it."""
MAX_DURATION = timedelta(days=3650)
"""The longest duration accepted (ten years): longer grace periods mean nothing, and the
times computed from one must stay within what Python's datetime and DuckDB hold."""


def parse_duration(text: str, maximum: timedelta = MAX_DURATION) -> timedelta:
    """``24h``, ``0s``, ``7d``, ``1h30m``, ``90m`` (Go's style, plus days and weeks), at most
    ``maximum``; anything else (spaces, capitals, a sign, an empty text) is refused."""
    if not isinstance(text, str):
        raise ValueError(f"not a duration: {text!r} (examples: 24h, 0s, 7d, 1h30m)")
    if text == "0":
        return timedelta(0)
    position, seconds = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _SECONDS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (examples: 24h, 0s, 7d, 1h30m)")
    if seconds > maximum.total_seconds():
        raise ValueError(f"{text} is longer than {format_duration(maximum)}, the longest accepted")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """A duration as :func:`parse_duration` reads it, in its largest whole unit."""
    seconds = value.total_seconds()
    if not seconds:
        return "0s"
    for unit in ("w", "d", "h", "m", "s"):
        if seconds >= _SECONDS[unit] and seconds % _SECONDS[unit] == 0:
            return f"{seconds / _SECONDS[unit]:.0f}{unit}"
    return f"{seconds * 1000:g}ms"


def _bounded(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, description="A duration such as 24h, 0s, 7d or 1h30m."),
    AfterValidator(_bounded),
]
"""A duration parameter: validated (and documented) in the Prefect UI's form too."""


def format_bytes(size: float) -> str:
    """1536 -> '1.5 KiB' (binary units, as the reference prints)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
