"""Which paths are the API's (answered in problem+json) and which are the console's."""

from __future__ import annotations

# Everything outside these belongs to the console (and answers in HTML).
API_PREFIXES = (
    "/api/",
    "/ws/",
    "/boot/",
    "/health",
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
)


def is_console_path(path: str) -> bool:
    """Console paths authenticate with the session cookie themselves (and send a stranger
    to /login); an auth middleware in front of the app must let them through."""
    return not path.startswith(API_PREFIXES)
