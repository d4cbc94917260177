"""Issue 17 point 2: a progress bar is one line at 80 and at 200 columns."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from diskvault.cli.progress import make_progress


@pytest.mark.parametrize("width", [80, 200])
def test_a_bar_fits_the_terminal(width: int) -> None:
    out = io.StringIO()
    term = Console(file=out, width=width, color_system=None)
    with make_progress(term, message=True) as bar:
        task = bar.add_task(
            "image-convert 3f2a9c0d1e2f43a1",
            total=8 * 1024**3,
            message="converting a VHDX with a rather long message about what it is doing",
        )
        bar.update(task, completed=3 * 1024**3)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= width, lines
    assert "38%" in lines[0] and "image-convert 3f2a9c0d1e2f43a1" in lines[0]
