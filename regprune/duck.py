"""What every DuckDB connection of regprune shares: its resource limits and how a string becomes
a SQL literal. Both the snapshot tables (``tables``: merges) and the models (``models``) use
them, so they live below both."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import duckdb


def sql_literal(value: str | os.PathLike[str]) -> str:
    """A single-quoted SQL string literal (file paths go into DuckDB table functions)."""
    return "'" + str(value).replace("'", "''") + "'"


class DuckDBSettings(BaseModel):
    """Resource limits so analysis memory does not grow with the registry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_limit: str | None = Field(
        None,
        pattern=r"^\s*\d+(\.\d+)?\s*([KMGTkmgt]([Ii][Bb]|[Bb])?|[Bb]|%)\s*$",
        description="DuckDB's memory cap, e.g. 2GB, 512MiB or 50% (of the machine); past it "
        "DuckDB spills to temp_directory. Default: 80% of the machine's memory.",
    )
    temp_directory: str | None = Field(
        None,
        min_length=1,
        description="Folder for DuckDB's spill files (created when needed). Default: .tmp in "
        "the working directory.",
    )
    threads: int | None = Field(
        None, ge=1, le=1024, description="DuckDB threads. Default: one per CPU core."
    )

    def apply(self, con: duckdb.DuckDBPyConnection, memory_limit: str | None = None) -> None:
        """Set these limits on ``con``; ``memory_limit``: the cap when none is set here."""
        if limit := self.memory_limit or memory_limit:
            con.execute(f"SET memory_limit = {sql_literal(limit)}")
        if self.temp_directory:
            con.execute(f"SET temp_directory = {sql_literal(self.temp_directory)}")
        if self.threads:
            con.execute(f"SET threads = {int(self.threads)}")
