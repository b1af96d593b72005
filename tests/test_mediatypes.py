"""Media types are spelled in one place: regprune/mediatypes.py for Python, the macros of
sql/macros.sql for SQL, and the two agree."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from regprune import mediatypes
from regprune.models import query_text

TOP = Path(__file__).resolve().parents[1]
PRODUCT = ("regprune", "tasks", "flows", "sql")
SPELLED_HERE = {Path("regprune/mediatypes.py"), Path("sql/macros.sql")}
LITERAL = re.compile(r"vnd\.(docker|oci)\.")

KNOWN = sorted(
    value for name, value in vars(mediatypes).items() if name.isupper() and isinstance(value, str)
)


def test_no_media_type_is_spelled_elsewhere_in_the_product() -> None:
    elsewhere = [
        f"{path.relative_to(TOP)}:{number}: {line.strip()}"
        for folder in PRODUCT
        for path in sorted((TOP / folder).rglob("*"))
        if path.suffix in (".py", ".sql") and path.relative_to(TOP) not in SPELLED_HERE
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if LITERAL.search(line)
    ]
    assert not elsewhere, (
        "media types belong in regprune/mediatypes.py (SQL: the macros of sql/macros.sql):\n"
        + "\n".join(elsewhere)
    )


def test_the_sql_macros_spell_only_media_types_python_knows() -> None:
    spelled = set(re.findall(r"'(application/vnd\.[^']+)'", query_text("macros")))
    assert spelled  # else the check below would hold of nothing
    assert spelled <= set(KNOWN)


@pytest.mark.parametrize("media_type", [*KNOWN, "application/json", "", None])
def test_the_sql_macros_answer_as_python_does(media_type: str | None) -> None:
    with duckdb.connect() as con:
        con.execute(query_text("macros"))
        is_list, is_schema1 = con.execute(
            "SELECT is_list_media_type(?::VARCHAR), is_schema1_media_type(?::VARCHAR)",
            [media_type, media_type],
        ).fetchone()
        layer = con.execute("SELECT schema1_layer_media_type()").fetchone()[0]
    if media_type is None:  # as IN: unknown stays unknown
        assert (is_list, is_schema1) == (None, None)
    else:
        assert is_list == (media_type in mediatypes.LIST_MEDIA_TYPES)
        assert is_schema1 == (media_type in mediatypes.SCHEMA1_MEDIA_TYPES)
    assert layer == mediatypes.SCHEMA1_LAYER
