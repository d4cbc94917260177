"""Jinja2 rendering (autoescaped), flash messages and the console's error pages."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from diskvault.web.session import Console, safe_next

HERE = Path(__file__).parent
FLASH = "dv_flash"
PAGE_SIZES = (25, 50, 100)


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def when(value: datetime | None) -> str:
    if not isinstance(value, datetime):  # None, or a missing (Undefined) attribute
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(bytes=human_bytes, when=when, duration=duration)
templates.env.globals["page_sizes"] = PAGE_SIZES


def with_query(request: Request, **changes: Any) -> str:
    """The current page's URL with some query parameters replaced (for paging and sorting)."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return request.url.path + ("?" + urlencode(params) if params else "")


templates.env.globals["with_query"] = with_query


def _take_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
        return {"kind": str(data["kind"]), "text": str(data["text"])[:2000]}
    except (ValueError, KeyError, TypeError):
        return None


def render(
    request: Request,
    name: str,
    who: Console | None,
    context: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    flash = _take_flash(request)
    ctx = {"who": who, "flash": flash, "path": request.url.path, **(context or {})}
    response = templates.TemplateResponse(request, name, ctx, status_code=status)
    if flash:
        response.delete_cookie(FLASH, path="/")
    return response


def back_to(request: Request, who: Console, fallback: str) -> str:
    """Where a form returns: its ``next`` field, else the page it was posted from."""
    target = who.form.get("next")
    if not target:
        referer = urlsplit(request.headers.get("referer", ""))
        if referer.netloc == request.url.netloc:
            target = referer.path + (f"?{referer.query}" if referer.query else "")
    return safe_next(target or fallback)


def redirect(url: str, flash: tuple[str, str] | None = None) -> Response:
    """Post/redirect/get; the message rides in a one-shot cookie so it never sits in the URL."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        kind, text = flash
        payload = json.dumps({"kind": kind, "text": text[:1500]}).encode()
        value = base64.urlsafe_b64encode(payload).decode()
        response.set_cookie(FLASH, value, max_age=60, path="/", httponly=True, samesite="strict")
    return response


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return render(
        request,
        "error.html",
        None,
        {"status": status, "title": title, "detail": detail},
        status=status,
    )
