from diskvault.errors import Conflict, DiskvaultError, NotFound


class JobNotFound(NotFound):
    template = "job {id} was not found"


class JobFinished(Conflict):
    template = "job {id} already ended as {status}; only queued or running jobs can be cancelled"


class JobNotRetryable(Conflict):
    template = "job {id} cannot be retried: {reason}"


class UnknownJobKind(DiskvaultError):
    template = "unknown job kind {kind!r}; known kinds: {known}"
    status = 422
    exit_code = 2
    title = "Unknown job kind"


class RetriableError(DiskvaultError):
    """Raise from a task to have the job retried with exponential backoff."""

    template = "{detail}"
    status = 503
    title = "Temporary failure"


class HeartbeatLost(DiskvaultError):
    template = (
        "the worker running this job stopped responding (no heartbeat for {seconds:.0f}s); "
        "it was killed or its host went down"
    )
