"""``sleep-and-count``: a test-only job kind that exercises the job system.

Registered always, but only submittable over the API when
``DISKVAULT_ENABLE_TEST_JOBS=1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diskvault.jobs.context import JobContext
from diskvault.jobs.errors import RetriableError
from diskvault.jobs.registry import job_kind
from diskvault.tools.process import Process


@job_kind("noop", test_only=True)
def noop(ctx: JobContext) -> dict[str, Any]:
    return {"attempt": ctx.attempt}


@job_kind("sleep-and-count", test_only=True, idempotent=False)
def sleep_and_count(ctx: JobContext) -> dict[str, Any]:
    """Counts ``steps`` steps over ``seconds``; options test failure paths.

    params: seconds, steps, fail_times (retriable failures before success),
    crash (unexpected exception), subprocess (run ``sleep`` so cancel must stop
    a child), partial (a file to create and expect cleaned up on failure).
    """
    p = ctx.params
    seconds, steps = float(p.get("seconds", 1)), max(1, int(p.get("steps", 10)))
    if ctx.attempt <= int(p.get("fail_times", 0)):
        raise RetriableError(f"simulated transient failure on attempt {ctx.attempt}")
    if p.get("partial"):
        partial = ctx.cleanup_on_failure(Path(p["partial"]))
        partial.write_bytes(b"partial output")
    if p.get("subprocess"):
        proc = Process(["sleep", str(seconds)])
        proc.start()
        ctx.progress(
            0, steps, message=f"child pid {proc.proc.pid if proc.proc else '?'}", force=True
        )
        proc.wait(should_cancel=ctx.should_cancel)
    else:
        for i in range(steps):
            ctx.sleep(seconds / steps)
            ctx.progress(i + 1, steps, message=f"step {i + 1}/{steps}")
    if p.get("crash"):
        raise ZeroDivisionError("simulated crash in task code")
    if p.get("partial"):
        ctx.keep(Path(p["partial"]))
    return {"counted": steps, "attempt": ctx.attempt}
