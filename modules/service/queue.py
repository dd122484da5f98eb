"""One job queue for the UI and the API: a single worker thread owns the GPU and runs jobs first
in, first out. A job carries its id, kind, request, state, progress, preview, result and error;
waiting callers block on it (``Job.result``) or poll it (the UI, ``/internal/progress``)."""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from modules.core.devices import return_freed_memory

log = logging.getLogger("hanga")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"


class QueueFull(RuntimeError):
    """More jobs are waiting than the ``queue_limit`` setting allows."""

    def __init__(self, limit: int):
        super().__init__(f"queue full: {limit} jobs are already waiting (setting queue_limit); try again later")
        self.limit = limit


class JobCancelled(RuntimeError):
    """The job was removed from the queue before it started."""


class DuplicateJob(ValueError):
    """A job id (``force_task_id``) that is already queued or running."""


@dataclass(eq=False)
class Job:
    kind: str  # "txt2img", "img2img", "extras", "checkpoint", …
    work: Callable[["Job"], Any] | None
    request: Any = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    number: int = 0  # order of arrival
    state: str = QUEUED
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    outcome: Any = None
    error: BaseException | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def record(self) -> "Job":
        """A finished copy for the history: ids, state and times, without the outcome, the
        request or the error's traceback (they hold pictures, tensors and models)."""
        kept = Job(self.kind, None, None, id=self.id, number=self.number, state=self.state,
                   submitted_at=self.submitted_at, started_at=self.started_at, finished_at=self.finished_at)
        if self.error is not None:
            kept.error = RuntimeError(f"{type(self.error).__name__}: {self.error}")
        kept._done.set()
        return kept

    def result(self, timeout: float | None = None) -> Any:
        """The job's outcome once it has run; its error raised again when it failed."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.id} is still {self.state}")
        if self.error is not None:
            raise self.error
        return self.outcome


class JobQueue:
    """FIFO with a cap on waiting jobs; ``limit`` is read at each submit (a live setting)."""

    def __init__(self, limit: Callable[[], int] = lambda: 100, history: int = 200, name: str = "hanga-gpu"):
        self._limit = limit
        self._lock = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._finished: collections.deque[Job] = collections.deque(maxlen=history)
        self._numbers = itertools.count(1)
        self._name = name
        self._worker: threading.Thread | None = None

    # -- submitting ----------------------------------------------------------------------------------
    def submit(self, kind: str, work: Callable[[Job], Any], request: Any = None, job_id: str | None = None) -> Job:
        """Queue ``work``; on the worker itself (a job that starts another, e.g. a script) it runs
        at once instead of waiting for itself."""
        if threading.current_thread() is self._worker:
            job = Job(kind, work, request, number=next(self._numbers), state=RUNNING, started_at=time.time())
            self._execute(job)
            return job
        with self._lock:
            limit = self._limit()
            if len(self._waiting) >= limit:
                raise QueueFull(limit)
            if job_id and self._find_active(job_id) is not None:
                raise DuplicateJob(f"a job with id {job_id!r} is already queued or running")
            job = Job(kind, work, request, number=next(self._numbers))
            if job_id:
                job.id = job_id
            self._waiting.append(job)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._worker.start()
            self._lock.notify_all()
            return job

    def run(self, kind: str, work: Callable[[Job], Any], request: Any = None, job_id: str | None = None) -> Any:
        """Submit and wait: the outcome, or the job's error."""
        return self.submit(kind, work, request, job_id).result()

    def cancel(self, job_id: str) -> bool:
        """Remove a waiting job; a running one is stopped with Interrupt instead (False here)."""
        with self._lock:
            for job in self._waiting:
                if job.id == job_id:
                    self._waiting.remove(job)
                    job.state, job.error, job.finished_at = CANCELLED, JobCancelled(f"job {job_id} was cancelled"), time.time()
                    job.work = None
                    self._finished.append(job.record())
                    job._done.set()
                    return True
        return False

    # -- looking ---------------------------------------------------------------------------------------
    @property
    def running(self) -> Job | None:
        return self._running

    def waiting(self) -> list[Job]:
        with self._lock:
            return list(self._waiting)

    def finished(self) -> list[Job]:
        with self._lock:
            return list(self._finished)

    def find(self, job_id: str) -> Job | None:
        with self._lock:
            return self._find_active(job_id) or next((job for job in reversed(self._finished) if job.id == job_id), None)

    def _find_active(self, job_id: str) -> Job | None:
        if self._running is not None and self._running.id == job_id:
            return self._running
        return next((job for job in self._waiting if job.id == job_id), None)

    def position(self, job: Job) -> tuple[int, int]:
        """(1-based place among the jobs ahead and this one, all active jobs) — "In queue: 2/3";
        (0, n) once it runs or has finished."""
        with self._lock:
            total = len(self._waiting) + (self._running is not None)
            try:
                ahead = list(self._waiting).index(job)
            except ValueError:
                return 0, total
            return ahead + 1 + (self._running is not None), total

    # -- the worker -------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting:
                    self._lock.wait()
                job = self._running = self._waiting.popleft()
                job.state, job.started_at = RUNNING, time.time()
            self._execute(job)
            with self._lock:
                self._running = None
                self._finished.append(job.record())
            job = None  # the caller holds the outcome; the worker keeps nothing of it
            return_freed_memory()  # else the RSS stays at the biggest job's peak

    @staticmethod
    def _execute(job: Job) -> None:
        try:
            job.outcome = job.work(job)
            job.state = DONE
        except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
            job.error, job.state = error, FAILED
            if not isinstance(error, Exception):
                log.exception("job %s stopped the worker", job.id)
        finally:
            job.finished_at = time.time()
            job.work = None  # its closure holds the request (pictures); let it go
            job._done.set()
