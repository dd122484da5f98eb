"""Seeded noise per image, as A1111 draws it (``a1111-compat.md`` §4).

Every image owns a generator seeded with its own seed, so image k of a batch is the same as that
image generated alone. The first draw is the initial latent (with variation seed and "resize seed
from" applied); later draws feed ancestral samplers. With an eta noise seed delta (ENSD) the
generators are re-seeded with ``seed + ENSD`` after the initial latent.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch

from modules.core.rng_philox import PhiloxGenerator

RNG_SOURCES = ("GPU", "CPU", "NV")
MAX_SEED = 4294967294


def random_seed() -> int:
    return random.randrange(MAX_SEED)


def fix_seed(seed: int | str | None) -> int:
    """-1, "" and None mean "pick a random seed" (A1111)."""
    if seed is None or seed == "" or int(seed) == -1:
        return random_seed()
    return int(seed)


def generator_device(source: str, device: torch.device) -> torch.device:
    """"CPU" draws on the CPU on every machine; "GPU" draws on the generation device; "NV" computes
    CUDA's Philox stream on the CPU, so it is the same on every machine."""
    if source in ("CPU", "NV") or device.type == "mps":
        return torch.device("cpu")
    return device


def slerp(value: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation of (C, H, W) noise; norms along dim 1; its lerp fallback
    weighs the tensors the other way round, which is kept for identical images."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * value + high * (1 - value)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - value) * omega) / so).unsqueeze(1) * low + (torch.sin(value * omega) / so).unsqueeze(1) * high


class ImageRNG:
    """Noise for one batch: ``next()`` first returns the initial latent, then step noise."""

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        device: torch.device,
        source: str = "GPU",
        subseeds: Sequence[int] = (),
        subseed_strength: float = 0.0,
        seed_resize_from: tuple[int, int] = (0, 0),
        eta_noise_seed_delta: int = 0,
    ):
        self.shape = tuple(int(s) for s in shape)
        self.seeds = list(seeds)
        self.device = device
        if source not in RNG_SOURCES:
            raise ValueError(f"unknown RNG source {source!r}; choose one of: {', '.join(RNG_SOURCES)}")
        self.source = source
        self.draw_device = generator_device(source, device)
        self.subseeds = list(subseeds)
        self.subseed_strength = subseed_strength
        self.seed_resize_from = seed_resize_from
        self.ensd = eta_noise_seed_delta
        self.generators = [self._generator(seed) for seed in self.seeds]
        self.is_first = True

    def _generator(self, seed: int) -> torch.Generator | PhiloxGenerator:
        if self.source == "NV":
            return PhiloxGenerator(int(seed))
        return torch.Generator(self.draw_device).manual_seed(int(seed))

    def _randn(self, shape: tuple[int, ...], generator: torch.Generator | PhiloxGenerator) -> torch.Tensor:
        if isinstance(generator, PhiloxGenerator):
            return torch.from_numpy(generator.randn(shape))
        return torch.randn(shape, device=self.draw_device, generator=generator)

    def _noise_shape(self) -> tuple[int, ...]:
        width, height = self.seed_resize_from
        if width <= 0 or height <= 0:
            return self.shape
        return (self.shape[0], height // 8, width // 8)

    def first(self) -> torch.Tensor:
        noise_shape = self._noise_shape()
        images = []
        for index, (seed, generator) in enumerate(zip(self.seeds, self.generators)):
            if noise_shape == self.shape:
                noise = self._randn(self.shape, generator)
            else:
                noise = self._randn(noise_shape, self._generator(seed))
            if self.subseed_strength != 0 and self.subseeds:
                subseed = self.subseeds[index] if index < len(self.subseeds) else 0
                subnoise = self._randn(noise_shape, self._generator(subseed))
                noise = slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != self.shape:
                noise = self._paste_centre(noise, self._randn(self.shape, generator))
            images.append(noise)
        if self.ensd:
            self.generators = [self._generator(seed + self.ensd) for seed in self.seeds]
        return torch.stack(images).to(self.device)

    @staticmethod
    def _paste_centre(small: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        dx = (full.shape[2] - small.shape[2]) // 2
        dy = (full.shape[1] - small.shape[1]) // 2
        w = small.shape[2] if dx >= 0 else small.shape[2] + 2 * dx
        h = small.shape[1] if dy >= 0 else small.shape[1] + 2 * dy
        tx, ty = max(dx, 0), max(dy, 0)
        sx, sy = max(-dx, 0), max(-dy, 0)
        full[:, ty : ty + h, tx : tx + w] = small[:, sy : sy + h, sx : sx + w]
        return full

    def next(self) -> torch.Tensor:
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([self._randn(self.shape, g) for g in self.generators]).to(self.device)
