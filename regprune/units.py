"""Durations and byte counts as people write and read them."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import Field

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


Duration = Annotated[
    str,
    Field(
        pattern=r"^(0|(\d+(\.\d+)?(ms|s|m|h|d|w))+)$",
        description="A duration such as 24h, 0s, 7d or 1h30m.",
    ),
]
"""A duration parameter: validated (and documented) in the Prefect UI's form too."""


def parse_duration(text: str) -> timedelta:
    """``24h``, ``0s``, ``7d``, ``1h30m``, ``90m`` (Go's style, plus days and weeks)."""
    value = text.strip().lower()
    if value == "0":
        return timedelta(0)
    position, seconds = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _SECONDS[match.group(2)]
        position = match.end()
    if position != len(value) or not value:
        raise ValueError(f"not a duration: {text!r} (examples: 24h, 0s, 7d, 1h30m)")
    return timedelta(seconds=seconds)


def format_bytes(size: float) -> str:
    """1536 -> '1.5 KiB' (binary units, as the reference prints)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
