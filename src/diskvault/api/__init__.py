"""HTTP API: app factory, dependencies, problem+json errors, health and metrics."""
