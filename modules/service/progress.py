"""Progress and stop flags of the running job, shared by the UI, the API and the console bar."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch
from PIL import Image
from tqdm import tqdm

log = logging.getLogger("hanga")


@dataclass(frozen=True)
class PreviewPlan:
    """Every ``every_n`` sampling steps, ``render`` turns the denoised latent into a picture."""

    every_n: int
    render: Callable[[torch.Tensor], Image.Image]


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
    job_id: str = ""
    job_timestamp: str = ""
    preview_id: int = 0  # grows with each new live preview
    steps_done: int = 0  # sampling steps of the whole job so far (for it/s)

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
        self._plan: PreviewPlan | None = None
        self._preview: Image.Image | None = None

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            return self._snapshot

    def _update(self, **changes) -> None:
        with self._lock:
            self._snapshot = ProgressSnapshot(**{**self._snapshot.__dict__, **changes})

    # -- lifecycle (service side) ----------------------------------------------------------------
    def begin(self, job: str, listener: Callable[[ProgressSnapshot], None] | None = None, job_id: str = "",
              preview: PreviewPlan | None = None) -> None:
        """Start a job; ``listener`` (e.g. the UI's progress bar) hears every step of it and
        ``preview`` says how often to draw a live preview."""
        self._listener = listener
        self._plan = preview
        with self._lock:
            self._preview = None
        self._update(active=True, job=job, job_no=0, job_count=0, sampling_step=0, sampling_steps=0,
                     interrupted=False, skipped=False, started_at=time.time(), job_id=job_id, steps_done=0,
                     job_timestamp=time.strftime("%Y%m%d%H%M%S"))

    def end(self) -> None:
        self._listener = None
        self._plan = None
        self._close_bar()
        with self._lock:
            self._preview = None
        self._update(active=False, job="", job_no=0, job_count=0, sampling_step=0, sampling_steps=0, job_id="")

    def preview(self) -> tuple[int, Image.Image | None]:
        """The newest live preview of the running job and its id (0 and None before the first)."""
        with self._lock:
            return self._snapshot.preview_id, self._preview

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
        with self._lock:
            done = self._snapshot.steps_done + 1
        self._update(sampling_step=step + 1, steps_done=done)
        plan = self._plan
        if plan is not None and plan.every_n > 0 and (step + 1) % plan.every_n == 0:
            self._draw(plan, denoised)
        if self._bar is not None:
            self._bar.update(1)
        self._notify()

    def _draw(self, plan: PreviewPlan, denoised: torch.Tensor) -> None:
        try:
            picture = plan.render(denoised)
        except Exception as error:  # noqa: BLE001 - a preview never stops the job
            log.warning("Live preview turned off for this job: %s", error)
            self._plan = None
            return
        with self._lock:
            self._preview = picture
            self._snapshot = ProgressSnapshot(**{**self._snapshot.__dict__, "preview_id": self._snapshot.preview_id + 1})

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
