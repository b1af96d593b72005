"""regprune tasks: Prefect tasks and the I/O helpers they share."""
