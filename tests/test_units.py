"""Durations as the command line, the flows' parameters and the Prefect UI read them: one
grammar (Go's, plus days and weeks), bounded, with the same answer everywhere."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from regprune.units import MAX_DURATION, Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("24h", timedelta(hours=24)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5h", timedelta(minutes=90)),
        ("100ms", timedelta(milliseconds=100)),
        ("2w", timedelta(days=14)),
        ("3650d", MAX_DURATION),
    ],
)
def test_durations_read(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    TypeAdapter(Duration).validate_python(text)  # a flow parameter takes it too


@pytest.mark.parametrize(
    "text",
    ["", " 1h", "1h ", "1H", "-1h", "24", "abc", "1e5s", "1h-", "--", "3651d", "99999999999d"],
)
def test_anything_else_is_refused_alike_by_the_parser_and_the_parameter_type(text: str) -> None:
    """What the command line refuses, a flow parameter (a deployment, the Prefect UI) refuses
    too: no value that one accepts and the other rejects."""
    with pytest.raises(ValueError):
        parse_duration(text)
    with pytest.raises(ValidationError):
        TypeAdapter(Duration).validate_python(text)


def test_too_long_says_the_longest() -> None:
    with pytest.raises(ValueError, match="9223372036854775807s is longer than 3650d"):
        parse_duration("9223372036854775807s")
    with pytest.raises(ValueError, match="2h is longer than 1h"):
        parse_duration("2h", timedelta(hours=1))
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(["--"])  # type: ignore[arg-type]  # argparse's value for '--'


def test_durations_are_written_in_their_largest_whole_unit() -> None:
    assert [format_duration(timedelta(seconds=s)) for s in (0, 0.5, 10, 90, 3600, 86400)] == [
        "0s",
        "500ms",
        "10s",
        "90s",
        "1h",
        "1d",
    ]
