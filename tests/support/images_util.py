"""Helpers for image tests: uploads, waiting for statuses, hostile files, read sentinels."""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from diskvault.tools import qemu_img
from support import qemu_io

MiB = 1024 * 1024
# Written by every patterned test image: (offset, length, byte).
PATTERN = [(0, 64 * 1024, 0xAA), (1 * MiB, 64 * 1024, 0xBB), (7 * MiB, 64 * 1024, 0xCC)]
SIZE = 8 * MiB


def patterned(path: Path, fmt: str, options: dict[str, Any] | None = None) -> Path:
    """An image of SIZE holding PATTERN, written through qemu-io."""
    qemu_img.create(path, fmt, SIZE, options=options or {})
    for offset, length, byte in PATTERN:
        qemu_io.write_pattern(path, fmt, offset, length, byte)
    return path


def expected_raw(path: Path, size: int = SIZE) -> Path:
    """The raw bytes every patterned image must convert to."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, length, byte in PATTERN:
            fh.seek(offset)
            fh.write(bytes([byte]) * length)
    return path


def upload(client: Any, path: Path, **fields: str) -> Any:
    """POST /api/v1/images/upload with ``path`` as the file part; returns the response."""
    with open(path, "rb") as fh:
        return client.post(
            "/api/v1/images/upload",
            files={"file": (path.name, fh, "application/octet-stream")},
            data={"name": path.stem, "image_type": "system", **fields},
        )


def wait_image(
    client: Any, image_id: str, statuses: set[str], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    image: dict[str, Any] = {}
    while time.monotonic() < deadline:
        image = client.get(f"/api/v1/images/{image_id}").json()
        if image["status"] in statuses:
            return image
        time.sleep(0.05)
    raise AssertionError(f"image {image_id} never reached {statuses}: {image}")


def wait_job_progress(client: Any, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until a running job reports some progress."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["percent"] > 0:
            return job
        if job["status"] in ("succeeded", "failed", "cancelled"):
            raise AssertionError(f"job ended before it reported progress: {job}")
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} reported no progress: {job}")


class ReadSentinel:
    """A FIFO that proves nobody opened it for reading.

    Opening a FIFO for reading blocks until a writer comes, so a reader would
    hang, and our non-blocking write-open succeeds exactly while a reader
    waits. ``touched`` is set if that ever happens while watching.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.touched = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader, as it should be
                    raise
                continue
            self.touched = True
            os.close(fd)  # the reader sees EOF and goes on

    def __enter__(self) -> ReadSentinel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def temp_leftovers(data_dir: Path, image_id: str) -> list[str]:
    return sorted(p.name for p in (data_dir / "tmp").glob(f"{image_id}*"))


class FileServer(http.server.ThreadingHTTPServer):
    """A loopback HTTP server for URL imports; ``redirects`` maps a path to a Location."""

    def __init__(
        self, root: Path, redirects: dict[str, str] | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.root = root
        self.redirects = redirects or {}
        self.host = host
        self.seen_hosts: list[str] = []  # Host headers received
        super().__init__((host, 0), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: FileServer

    def __init__(self, request: Any, client_address: Any, server: FileServer) -> None:
        super().__init__(request, client_address, server, directory=str(server.root))

    def do_GET(self) -> None:
        self.server.seen_hosts.append(self.headers.get("Host", ""))
        if self.path in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.redirects[self.path])
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        return None


@contextmanager
def file_server(
    root: Path, redirects: dict[str, str] | None = None, host: str = "127.0.0.1"
) -> Iterator[FileServer]:
    server = FileServer(root, redirects, host)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


DnsAnswer = str | list[str] | Callable[[], str]


@contextmanager
def patched_dns(answers: dict[str, DnsAnswer]) -> Iterator[None]:
    """Resolve the given names to the given loopback addresses (no DNS server here).

    A callable answer is asked on every lookup, as a rebinding DNS server would answer.
    """
    real = socket.getaddrinfo

    def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        answer = answers[host]
        found = answer() if callable(answer) else answer
        names = [found] if isinstance(found, str) else found
        return [info for name in names for info in real(name, port, *args, **kwargs)]

    socket.getaddrinfo = lookup
    try:
        yield
    finally:
        socket.getaddrinfo = real


def reference_digest(data: bytes) -> str:
    """sha256-extents-v1 as docs/images.md defines it, computed the plain way."""
    h = hashlib.sha256()
    for offset in range(0, len(data), 65536):
        block = data[offset : offset + 65536]
        if block.count(0) != len(block):
            h.update(struct.pack(">QQ", offset, len(block)) + block)
    h.update(struct.pack(">Q", len(data)))
    return h.hexdigest()
