"""``diskvault`` with the test job kinds and their submit route: for subprocess servers
and workers in tests (``python -m support.demo_cli serve``, with tests/ on the path)."""

from __future__ import annotations

from typing import Any

from diskvault.api import app as app_module
from diskvault.cli.entry import main
from support import demo_jobs

_create_app = app_module.create_app


def create_app(*args: Any, **kwargs: Any) -> Any:
    app = _create_app(*args, **kwargs)
    demo_jobs.install(app)
    return app


app_module.create_app = create_app  # type: ignore[assignment]

if __name__ == "__main__":
    main()
