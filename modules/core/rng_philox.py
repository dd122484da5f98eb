"""The "NV" noise source (``a1111-compat.md`` §4.2): CUDA's ``torch.randn`` reproduced in numpy.

CUDA torch draws normals with cuRAND's Philox4x32-10 engine. For a tensor of ``n`` elements the
kernel gives element ``i`` its own Philox subsequence ``i`` and keeps the first of the four normals
that one Philox block yields, so element ``i`` is Box–Muller of the first two output words of

    counter = [calls, 0, i, 0]   (four uint32 words; the 64-bit call count spans words 0 and 1)
    key     = [seed & 0xFFFFFFFF, seed >> 32]

where ``calls`` is the number of non-empty ``randn`` calls already made on the generator (torch
advances its Philox offset by 4 draws per call, which is one 128-bit counter step). Checked
against ``tests/data/cuda_randn_refs.json``.

This layout holds while CUDA launches at least one thread per element, i.e. for
``n <= max threads per SM * SM count`` (270,336 on an H100, 221,184 on an A100, 196,608 on an
RTX 4090; an SDXL 1024² latent has 65,536). Past that, CUDA's grid-stride loop reorders elements
in a way that depends on the GPU model. A1111's NV source keeps the simple layout there too, and
so do we, which keeps NV images the same on every machine.

Box–Muller runs in float32, as cuRAND does and as the spec (and A1111's NV source) write it. It is
then within 1.4e-6 of CUDA (11.5 float32 ulps at 1.0; rms 2.2). The remaining error comes from
CUDA's hardware sine approximation (``__sinf``), which numpy cannot reproduce bit for bit.
Reducing the argument the way ``__sinf`` appears to (a float32 round-toward-zero multiply by
1/2π) lowers the maximum error to 8e-7. But it moves the mean of every 64×64 draw by about
+15·√n ulps, so the plain formula is kept.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

PHILOX_ROUNDS = 10
MULTIPLIER_0 = np.uint64(0xD2511F53)
MULTIPLIER_1 = np.uint64(0xCD9E8D57)
WEYL_0 = 0x9E3779B9
WEYL_1 = 0xBB67AE85

_MASK32 = 0xFFFFFFFF
_SHIFT32 = np.uint64(32)
# cuRAND's Box–Muller scale factors, float32 like the GPU's constants.
_TWO_POW_MINUS_32 = np.float32(2.0**-32)
_TWO_PI_TWO_POW_MINUS_32 = np.float32(2.0 * math.pi * 2.0**-32)


def philox4x32_10(counter: Sequence[np.ndarray], key: tuple[int, int]) -> list[np.ndarray]:
    """Philox4x32-10 of the four uint32 counter words (arrays of one shape) under a 2-word key."""
    c0, c1, c2, c3 = (np.asarray(word, dtype=np.uint32) for word in counter)
    key0, key1 = key[0] & _MASK32, key[1] & _MASK32
    for _ in range(PHILOX_ROUNDS):
        product0 = c0.astype(np.uint64) * MULTIPLIER_0
        product1 = c2.astype(np.uint64) * MULTIPLIER_1
        hi0 = (product0 >> _SHIFT32).astype(np.uint32)
        hi1 = (product1 >> _SHIFT32).astype(np.uint32)
        c0, c1, c2, c3 = (
            hi1 ^ c1 ^ np.uint32(key0),
            product1.astype(np.uint32),
            hi0 ^ c3 ^ np.uint32(key1),
            product0.astype(np.uint32),
        )
        key0 = (key0 + WEYL_0) & _MASK32
        key1 = (key1 + WEYL_1) & _MASK32
    return [c0, c1, c2, c3]


def box_muller_sin(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """cuRAND's first Box–Muller normal from two uint32 words: sqrt(-2 ln u) · sin v, in float32."""
    u = x.astype(np.float32) * _TWO_POW_MINUS_32 + _TWO_POW_MINUS_32 / np.float32(2)
    v = y.astype(np.float32) * _TWO_PI_TWO_POW_MINUS_32 + _TWO_PI_TWO_POW_MINUS_32 / np.float32(2)
    return np.sqrt(np.float32(-2) * np.log(u)) * np.sin(v)


def _normalise_seed(seed: int) -> int:
    """Seeds as torch's ``manual_seed`` takes them: negative values wrap to 64 bits."""
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed {seed} does not fit in 64 bits")
    return seed % 2**64


def _normalise_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    dims = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimension in shape {dims}")
    return dims


class PhiloxGenerator:
    """A CUDA ``torch.Generator`` seeded with ``manual_seed(seed)``, for ``randn`` only.

    ``offset`` counts the non-empty ``randn`` calls made so far (the Philox counter's low 64 bits).
    """

    def __init__(self, seed: int):
        self.seed = _normalise_seed(seed)
        self.offset = 0

    def randn(self, shape: int | Sequence[int]) -> np.ndarray:
        """Standard normals of ``shape`` as float32, the same values CUDA ``torch.randn`` gives."""
        dims = _normalise_shape(shape)
        count = math.prod(dims)
        if count == 0:  # CUDA launches no kernel and leaves the offset alone
            return np.zeros(dims, dtype=np.float32)
        if count > 2**32:
            raise ValueError(f"{count} elements exceed the 2**32 Philox subsequences")
        words = self._words(count)
        self.offset += 1
        return box_muller_sin(words[0], words[1]).reshape(dims)

    def _words(self, count: int) -> list[np.ndarray]:
        index = np.arange(count, dtype=np.uint32)
        offset_lo = np.full(count, self.offset & _MASK32, dtype=np.uint32)
        offset_hi = np.full(count, (self.offset >> 32) & _MASK32, dtype=np.uint32)
        zeros = np.zeros(count, dtype=np.uint32)
        key = (self.seed & _MASK32, self.seed >> 32)
        return philox4x32_10((offset_lo, offset_hi, index, zeros), key)


def philox_randn(
    shape: int | Sequence[int],
    generator: PhiloxGenerator,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``torch.randn(shape, generator=…, device=…, dtype=…)`` for the NV source."""
    return torch.from_numpy(generator.randn(shape)).to(device=device, dtype=dtype)
