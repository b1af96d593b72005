"""Prefect tasks: one unit of I/O or analysis each, with retries.

The library they call is regprune/."""
