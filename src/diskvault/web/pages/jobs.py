"""Jobs: every job with filters, live progress, errors and cancel."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from diskvault.api.deps import DbDep, SettingsDep
from diskvault.jobs import registry, service
from diskvault.jobs.models import JobStatus
from diskvault.web import svg
from diskvault.web.pages.common import ListDep
from diskvault.web.render import back_to, redirect, render
from diskvault.web.session import OperatorWriterDep, ReaderDep

router = APIRouter()


@router.get("/jobs")
def list_jobs(
    request: Request,
    who: ReaderDep,
    db: DbDep,
    lq: ListDep,
    kind: str = Query("", max_length=64),
    status: JobStatus | None = Query(None),
) -> Response:
    items, total = service.list_jobs(
        db, lq.page, kind=kind or None, status=status, listing=lq.listing()
    )
    context = {
        **lq.sorted_out(items, total, service.JOB_SORTS, "-created"),
        "kind": kind,
        "status": status.value if status else "",
        "statuses": list(JobStatus),
        "kinds": sorted(k for k, spec in registry.KINDS.items() if not spec.test_only),
    }
    return render(request, "jobs.html", who, context)


@router.get("/jobs/{job_id}")
def job_detail(request: Request, job_id: str, who: ReaderDep, db: DbDep) -> Response:
    job = service.get(db, job_id)
    rerun = job.kind in registry.KINDS and registry.KINDS[job.kind].rerun
    chart = svg.throughput(job.samples)
    return render(request, "job_detail.html", who, {"job": job, "rerun": rerun, "chart": chart})


@router.post("/jobs/{job_id}/retry")
def retry_job(
    request: Request, job_id: str, who: OperatorWriterDep, db: DbDep, settings: SettingsDep
) -> Response:
    again = service.retry(db, settings, job_id, owner=who.principal.username)
    return redirect(f"/jobs/{again.id}", ("info", f"Started again as job {again.id[:8]}."))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: str, who: OperatorWriterDep, db: DbDep) -> Response:
    job = service.cancel(db, job_id)
    text = "Cancelled." if job.status.finished else "Asked the job to stop; it ends shortly."
    return redirect(back_to(request, who, f"/jobs/{job_id}"), ("info", text))
