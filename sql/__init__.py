"""DuckDB queries, one per file; loaded by name with regprune.tasks.queries."""
