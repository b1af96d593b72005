"""regprune flows: one Prefect flow per user intent."""
