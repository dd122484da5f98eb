"""Conditioning that changes during sampling: prompt editing/alternation schedules and composable
``AND`` parts with weights (``a1111-compat.md`` §5.1, §4.4).

Each distinct prompt of a batch is encoded once. At denoiser call ``step`` (0-based, counting
both calls of second-order samplers), every schedule uses its first entry with
``step <= end_at_step``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from modules.core.conditioning.cond import Cond, rows, stack_padded
from modules.core.conditioning.prompt_parser import get_learned_conditioning_prompt_schedules, split_and

Encode = Callable[[list[str]], Cond]
CondsList = list[list[tuple[int, float]]]  # per image: (row of the stacked conds, weight)


@dataclass(frozen=True)
class Timeline:
    """One prompt's schedule: ``(end_at_step, conditioning (tokens, width))`` entries."""

    entries: tuple[tuple[int, Cond], ...]

    def at(self, step: int) -> Cond:
        for end_at_step, cond in self.entries:
            if step <= end_at_step:
                return cond
        return self.entries[0][1]


def _encode_timelines(encode: Encode, prompts: list[str], schedules: list[list[tuple[int, str]]]) -> list[Timeline]:
    """One encoder call per distinct prompt, over its schedule's texts together (so they share a
    chunk count, as in A1111); identical prompts reuse the result."""
    done: dict[str, Timeline] = {}
    timelines = []
    for prompt, schedule in zip(prompts, schedules):
        if prompt not in done:
            conds = rows(encode([text for _, text in schedule]))
            done[prompt] = Timeline(tuple((end, cond) for (end, _), cond in zip(schedule, conds)))
        timelines.append(done[prompt])
    return timelines


@dataclass(frozen=True)
class UncondBatch:
    timelines: tuple[Timeline, ...]

    def at(self, step: int) -> Cond:
        return stack_padded([timeline.at(step) for timeline in self.timelines])


@dataclass(frozen=True)
class CondBatch:
    """Per image, its ``AND`` parts as (timeline, weight)."""

    parts: tuple[tuple[tuple[Timeline, float], ...], ...]

    def at(self, step: int) -> tuple[Cond, CondsList]:
        tensors, conds_list = [], []
        for image_parts in self.parts:
            rows = []
            for timeline, weight in image_parts:
                rows.append((len(tensors), weight))
                tensors.append(timeline.at(step))
            conds_list.append(rows)
        return stack_padded(tensors), conds_list


def encode_uncond(encode: Encode, prompts: Sequence[str], steps: int, hires_steps: int | None = None,
                  old_timelines: bool = False) -> UncondBatch:
    prompts = list(prompts)
    schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, old_timelines)
    return UncondBatch(tuple(_encode_timelines(encode, prompts, schedules)))


def encode_cond(encode: Encode, prompts: Sequence[str], steps: int, hires_steps: int | None = None,
                old_timelines: bool = False) -> CondBatch:
    """Composable prompts: each ``AND`` part has its own schedule and weight."""
    per_image = [split_and(prompt) for prompt in prompts]
    flat = [text for parts in per_image for text, _ in parts]
    schedules = get_learned_conditioning_prompt_schedules(flat, steps, hires_steps, old_timelines)
    timelines = iter(_encode_timelines(encode, flat, schedules))
    return CondBatch(tuple(tuple((next(timelines), weight) for _, weight in parts) for parts in per_image))
