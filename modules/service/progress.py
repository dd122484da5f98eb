"""Progress and stop flags of the running job, shared by the UI, the API and the console bar."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm


@dataclass(frozen=True)
class ProgressSnapshot:
    active: bool = False
    job: str = ""
    job_no: int = 0
    job_count: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    skipped: bool = False
    started_at: float = 0.0

    @property
    def progress(self) -> float:
        """A1111's formula: finished batches plus the fraction of the current one."""
        if not self.active or self.job_count == 0:
            return 0.0
        step_part = self.sampling_step / self.sampling_steps if self.sampling_steps else 0.0
        return min(1.0, (self.job_no + step_part) / self.job_count)

    @property
    def eta_seconds(self) -> float | None:
        done = self.progress
        if not self.active or done <= 0:
            return None
        elapsed = time.time() - self.started_at
        return elapsed / done - elapsed


class JobState:
    """Implements ``core.generation.txt2img.Progress`` for one job at a time."""

    def __init__(self, console_bar: bool = True):
        self._lock = threading.Lock()
        self._snapshot = ProgressSnapshot()
        self._console_bar = console_bar
        self._bar: tqdm | None = None
        self._listener: Callable[[ProgressSnapshot], None] | None = None

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            return self._snapshot

    def _update(self, **changes) -> None:
        with self._lock:
            self._snapshot = ProgressSnapshot(**{**self._snapshot.__dict__, **changes})

    # -- lifecycle (service side) ----------------------------------------------------------------
    def begin(self, job: str, listener: Callable[[ProgressSnapshot], None] | None = None) -> None:
        """Start a job; ``listener`` (e.g. the UI's progress bar) hears every step of it."""
        self._listener = listener
        self._update(active=True, job=job, job_no=0, job_count=0, sampling_step=0, sampling_steps=0,
                     interrupted=False, skipped=False, started_at=time.time())

    def end(self) -> None:
        self._listener = None
        self._close_bar()
        self._update(active=False, job="", job_no=0, job_count=0, sampling_step=0, sampling_steps=0)

    def interrupt(self) -> None:
        self._update(interrupted=True)

    def skip(self) -> None:
        self._update(skipped=True)

    # -- the core Progress protocol ---------------------------------------------------------------
    def start_batch(self, batch_index: int, batch_count: int, steps: int) -> None:
        self._update(job_no=batch_index, job_count=batch_count, sampling_step=0, sampling_steps=steps, skipped=False)
        self._close_bar()
        if self._console_bar:
            self._bar = tqdm(total=steps, desc=f"batch {batch_index + 1}/{batch_count}", leave=False)
        self._notify()

    def step(self, step: int, denoised: torch.Tensor) -> None:
        self._update(sampling_step=step + 1)
        if self._bar is not None:
            self._bar.update(1)
        self._notify()

    def _notify(self) -> None:
        if self._listener is not None:
            self._listener(self.snapshot())

    def stop_requested(self) -> bool:
        snapshot = self.snapshot()
        return snapshot.interrupted or snapshot.skipped

    def interrupted(self) -> bool:
        return self.snapshot().interrupted

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
