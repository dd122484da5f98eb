"""Brownian-tree noise for SDE samplers, one tree per image seeded with that image's seed
(k-diffusion's BatchedBrownianTree/BrownianTreeNoiseSampler semantics, as A1111 uses them)."""

from __future__ import annotations

from typing import Sequence

import torch
import torchsde


def _ordered(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    return (a, b, 1) if a < b else (b, a, -1)


class BrownianTreeNoise:
    """``noise(sigma, sigma_next)``: unit-variance Brownian increments between two sigmas, per image.

    The trees span [smallest positive sigma, largest sigma] of the schedule. A1111 replaces
    torchsde's internal draw with one from a generator seeded per tree node on the RNG source's
    device; building each tree on ``draw_device`` makes torchsde's own draw the same one (float32,
    ``torch.Generator(draw_device).manual_seed(node seed)``) without patching torchsde. The
    increments are then moved to the latent's device. Seeds are per image, so an image's noise
    does not depend on the batch it is in.
    """

    def __init__(self, x: torch.Tensor, sigmas: torch.Tensor, seeds: Sequence[int], draw_device: torch.device):
        if len(seeds) != x.shape[0]:
            raise ValueError(f"need one seed per image: {len(seeds)} seeds for a batch of {x.shape[0]}")
        t0, t1, self.sign = _ordered(sigmas[sigmas > 0].min(), sigmas.max())
        w0 = torch.zeros(x.shape[1:], dtype=torch.float32, device=draw_device)
        # torchsde's BrownianTree (default tol 1e-6) keeps its ends rounded to 6 decimals
        self.span = (round(float(t0), 6), round(float(t1), 6))
        self.trees = [torchsde.BrownianTree(self.span[0], w0, self.span[1], entropy=int(seed)) for seed in seeds]
        self.device, self.dtype = x.device, x.dtype

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        low, high, sign = _ordered(t0, t1)
        # Samplers query at sigma -> log -> exp round trips of the schedule's ends, which can land
        # one float32 ulp outside the span; clamp as torchsde would (it warns on every such query).
        low, high = (min(max(float(t), self.span[0]), self.span[1]) for t in (low, high))
        w = torch.stack([tree(low, high) for tree in self.trees]) * (self.sign * sign)
        w = w.to(device=self.device, dtype=self.dtype)
        return w / (t1 - t0).abs().sqrt()
