"""DuckDB queries, one model per file; regprune.models loads them by name."""
