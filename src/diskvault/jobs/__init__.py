"""Background jobs: Huey dispatches, the ``jobs`` table holds the truth."""
