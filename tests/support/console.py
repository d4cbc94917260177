"""Helpers for console tests: sign in through the login form and read CSRF tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from support.server import ADMIN_PASSWORD, ServerProcess

CHROMIUM = "/usr/bin/chromium"
WIDE, NARROW = {"width": 1280, "height": 900}, {"width": 390, "height": 844}


@dataclass
class Console:
    """A real server for browser tests, where screenshots go, and the organizer's root."""

    server: ServerProcess
    root: Path
    shots: Path
    organizer_root: Path


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def sign_in(
    client: TestClient | httpx.Client, username: str = "admin", password: str = ADMIN_PASSWORD
) -> str:
    """Log in with the form; returns the CSRF token of the dashboard."""
    nonce = csrf_of(client.get("/login").text)
    resp = client.post(
        "/login",
        data={"username": username, "password": password, "csrf": nonce, "next": "/"},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    return csrf_of(client.get("/").text)
