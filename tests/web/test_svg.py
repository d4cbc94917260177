"""The server-drawn pictures: geometry, badges, and escaping in their templates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from diskvault.web import svg
from diskvault.web.render import templates


def _point(pid: str, kind: str, size: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": pid,
        "backup_type": kind,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "file_size": size,
        "immutable_until": None,
        "verify_status": None,
        **extra,
    }


def _view(points: list[dict[str, Any]], broken: str | None = None) -> dict[str, Any]:
    chain = {"disk_index": 0, "total_size_bytes": 1, "broken_reason": broken, "points": points}
    return {"vm_name": "vm<1>", "chains": [chain]}


def test_blocks_grow_with_size_and_carry_letters_and_badges() -> None:
    view = _view(
        [
            _point("a", "full", 4000, verify_status="ok"),
            _point("b", "incremental", 10, immutable_until=datetime.now(UTC)),
            _point("c", "incremental", 1000, verify_status="corrupt"),
        ]
    )
    picture = svg.chain(view, mounted={"c"})
    blocks = picture["rows"][0]["blocks"]
    assert [b["letter"] for b in blocks] == ["F", "I", "I"]
    assert blocks[0]["w"] > blocks[2]["w"] > blocks[1]["w"] >= svg.MIN_W
    assert blocks[0]["badges"] == ["verified"]
    assert blocks[1]["badges"] == ["locked"]
    assert blocks[2]["badges"] == ["DAMAGED", "mounted"]
    assert blocks[1]["x"] > blocks[0]["x"] + blocks[0]["w"]  # no overlap


def test_chain_template_escapes_names_and_reasons() -> None:
    view = _view([_point("a", "full", 1)], broken="<script>alert(1)</script>")
    html = templates.env.get_template("svg_chain.html").render(chain=svg.chain(view))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "vm&lt;1&gt;" in html
    assert html.count('class="point"') == 1


def test_empty_chain_says_so() -> None:
    html = templates.env.get_template("svg_chain.html").render(chain=svg.chain(_view([])))
    assert "No restore points yet." in html


def test_category_bars_scale_to_the_largest() -> None:
    bars = svg.hbars([("disk-image", 1000), ("<b>other</b>", 250)])
    assert bars["bars"][0]["w"] == bars["bar_w"] and bars["bars"][1]["w"] == bars["bar_w"] / 4
    html = templates.env.get_template("svg_bars.html").render(bars=bars)
    assert "<b>" not in html and "&lt;b&gt;other&lt;/b&gt;" in html
