"""The documentation's reference pages are written from the code (regprune/cli/reference.py):
they must be what the code writes now, so the reference cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from regprune.cli import reference

DOCS = Path(__file__).resolve().parents[1] / "docs" / "reference"


@pytest.mark.parametrize("page", sorted(reference.PAGES))
def test_reference_page_is_what_the_code_writes(page: str) -> None:
    written = (DOCS / page).read_text()
    assert written == reference.PAGES[page](), (
        f"docs/reference/{page} is stale: run `python -m regprune.cli.reference docs/reference`"
    )


def test_every_table_says_what_a_row_is() -> None:
    from regprune import tables

    assert set(tables.ROWS) == set(tables.SCHEMAS)
