"""Geometry for the pictures the server draws as SVG (the templates draw, and escape).

The backup chain: one row per disk, one block per restore point, width by file
size. Colour is never the only signal: blocks carry F/I letters, badges words.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from diskvault.web.render import human_bytes, when

BLOCK_H = 34
MIN_W, MAX_W = 18, 160
GAP = 6


def _badges(point: dict[str, Any], mounted: set[str]) -> list[str]:
    flags = [
        ("locked", point.get("immutable_until") is not None),
        ("verified", point.get("verify_status") == "ok"),
        ("DAMAGED", point.get("verify_status") in ("failed", "damaged", "corrupt")),
        ("mounted", point["id"] in mounted),
    ]
    return [label for label, on in flags if on]


def chain(view: dict[str, Any], mounted: Iterable[str] = ()) -> dict[str, Any]:
    mounted = set(mounted)
    chains = [c for c in view["chains"] if c["points"]]
    biggest = max((p["file_size"] for c in chains for p in c["points"]), default=0) or 1
    rows, width, y = [], 200, 18
    for c in chains:
        x, blocks = 0.0, []
        for p in c["points"]:
            w = MIN_W + (MAX_W - MIN_W) * (p["file_size"] / biggest) ** 0.5
            kind = "full" if p["backup_type"] == "full" else "incremental"
            badges = _badges(p, mounted)
            title = f"{kind} {when(p['created_at'])} {human_bytes(p['file_size'])}"
            blocks.append(
                {
                    "id": p["id"],
                    "x": round(x, 1),
                    "y": y,
                    "w": round(w, 1),
                    "kind": kind,
                    "letter": "F" if kind == "full" else "I",
                    "badges": badges,
                    "title": title + (f" ({', '.join(badges)})" if badges else ""),
                }
            )
            x += w + GAP
        width = max(width, int(x))
        label = f"disk {c['disk_index']} · {len(c['points'])} points · "
        label += human_bytes(c["total_size_bytes"])
        if c["broken_reason"]:
            label += f" · BROKEN: {c['broken_reason']}"
        rows.append({"y": y, "label": label, "blocks": blocks})
        most_badges = max(len(b["badges"]) for b in blocks)
        y += BLOCK_H + 10 * most_badges + 26  # room for the badges, then the next label
    return {
        "width": width,
        "height": y - 14,
        "rows": rows,
        "block_h": BLOCK_H,
        "name": view["vm_name"],
    }


def hbars(rows: list[tuple[str, int]]) -> dict[str, Any]:
    """Horizontal bars, one per (label, bytes), scaled to the largest."""
    top = max((v for _, v in rows), default=0) or 1
    bar_w = 240
    bars = [
        {
            "y": i * 24,
            "label": label,
            "w": round(max(1.0, bar_w * value / top), 1),
            "text": human_bytes(value),
        }
        for i, (label, value) in enumerate(rows)
    ]
    return {"bars": bars, "height": len(bars) * 24, "label_w": 110, "bar_w": bar_w}


def columns(rows: list[tuple[Any, int, str]], height: int = 80) -> dict[str, Any]:
    """Restore-point sizes over time: one column per point, full ones marked F."""
    top = max((n for _, n, _ in rows), default=0) or 1
    step = max(4, min(18, 720 // max(1, len(rows))))
    cols = [
        {
            "x": i * step,
            "w": max(2, step - 2),
            "h": max(1, round(height * n / top)),
            "full": kind == "full",
            "title": f"{when(t)} {kind} {human_bytes(n)}",
        }
        for i, (t, n, kind) in enumerate(rows)
    ]
    return {"cols": cols, "width": max(40, len(rows) * step), "height": height, "top": top}


def timeline(rows: list[tuple[Any, list[str]]]) -> dict[str, Any]:
    """Versions of a golden image left to right: a dot per version, an arc from its
    parent when that is not the one just before, the current one named in words."""
    step = 110
    dots = []
    by_version = {}
    for i, (v, users) in enumerate(sorted(rows, key=lambda r: r[0].version)):
        x = 30 + i * step
        by_version[v.version] = x
        label = f"v{v.version}" + (" (current)" if v.is_current else "")
        dots.append(
            {
                "x": x,
                "label": label,
                "current": v.is_current,
                "date": when(v.created_at),
                "machines": len(users),
                "title": f"{label}: {v.comment or 'no comment'}; machines: "
                + (", ".join(users) or "none"),
            }
        )
    arcs = [
        {"x1": by_version[v.parent_version], "x2": by_version[v.version]}
        for v, _ in rows
        if v.parent_version in by_version and v.parent_version != v.version - 1
    ]
    width = max(200, 60 + step * max(0, len(dots) - 1))
    return {"dots": dots, "arcs": arcs, "width": width, "height": 92}


def throughput(samples: list[list[float]] | None, w: int = 240, h: int = 40) -> dict[str, Any]:
    """A job's stored throughput samples ([seconds, bytes/s]) as a polyline."""
    samples = samples or []
    if len(samples) < 2:
        return {"points": "", "peak": 0, "seconds": 0}
    end = samples[-1][0] or 1
    peak = max(r for _, r in samples) or 1
    points = " ".join(f"{w * t / end:.1f},{h - h * r / peak:.1f}" for t, r in samples)
    return {"points": points, "peak": peak, "seconds": end}
