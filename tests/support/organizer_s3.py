"""A moto S3 server on 127.0.0.1 for organizer tests, with dummy credentials."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from moto.server import ThreadedMotoServer

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}


@contextmanager
def moto_s3() -> Iterator[str]:
    """Yields the endpoint URL; credentials are set in this process's environment."""
    env = pytest.MonkeyPatch()
    for key, value in CREDENTIALS.items():
        env.setenv(key, value)
    env.delenv("AWS_PROFILE", raising=False)
    env.delenv("AWS_SESSION_TOKEN", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        env.undo()
