"""Checkpoint merging: the tensor arithmetic of A1111's Checkpoint Merger, on plain state dicts.

Behaviour follows A1111 v1.10.1 (``run_modelmerger``):

- only floating-point keys whose name contains ``model`` and that B also has are merged; every
  other key of A is kept as it is (so A's file layout and extra tensors survive). A1111 also
  averages integer counters such as ``model_ema.num_updates`` (turning them into floats); we keep A's;
- "Add difference" first turns B into ``B - C`` (a B key that C lacks becomes zeros, so A keeps it);
- an inpainting (9 input channels) or instruct-pix2pix (8) A merged with a normal (4) B merges
  only the first 4 input channels of the first conv and keeps A's extra channels;
- "Save as float16" halves float32 tensors that were merged (every float32 tensor when nothing is
  interpolated), then the VAE is baked in, then keys matching the discard regex are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

NO_INTERPOLATION = "No interpolation"
WEIGHTED_SUM = "Weighted sum"
ADD_DIFFERENCE = "Add difference"
METHODS = (NO_INTERPOLATION, WEIGHTED_SUM, ADD_DIFFERENCE)

VAE_PREFIX = "first_stage_model."
# Integer buffers that must never be averaged (A1111's ``checkpoint_dict_skip_on_merge``).
SKIP_ON_MERGE = frozenset({"cond_stage_model.transformer.text_model.embeddings.position_ids"})
# Training leftovers in VAE files that are not VAE weights (A1111's ``vae_ignore_keys``).
_VAE_IGNORED = frozenset({"model_ema.decay", "model_ema.num_updates"})

StateDict = dict[str, torch.Tensor]


class MergeError(ValueError):
    """The inputs cannot be merged; ``role`` names the model at fault ("secondary", "vae", …)."""

    def __init__(self, role: str, message: str):
        super().__init__(message)
        self.role = role


@dataclass
class MergeResult:
    state_dict: StateDict
    is_inpainting: bool = False
    is_instruct_pix2pix: bool = False


def needs_secondary(method: str) -> bool:
    return method in (WEIGHTED_SUM, ADD_DIFFERENCE)


def needs_tertiary(method: str) -> bool:
    return method == ADD_DIFFERENCE


def _combine(method: str) -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
    if method == WEIGHTED_SUM:
        return lambda a, b, m: (1 - m) * a + m * b
    return lambda a, b_minus_c, m: a + m * b_minus_c


def to_half(tensor: torch.Tensor, enabled: bool) -> torch.Tensor:
    return tensor.half() if enabled and tensor.dtype == torch.float32 else tensor


def _mergeable(key: str, tensor: torch.Tensor) -> bool:
    # Integer buffers (step counters, ids) are kept from A: averaging them would turn them to floats.
    return "model" in key and key not in SKIP_ON_MERGE and tensor.is_floating_point()


def difference(b: Mapping[str, torch.Tensor], c: Mapping[str, torch.Tensor]) -> StateDict:
    """B with every mergeable tensor replaced by ``B - C`` (zeros where C lacks the key)."""
    result = dict(b)
    for key, tensor in b.items():
        if not _mergeable(key, tensor):
            continue
        if key in c:
            if c[key].shape != tensor.shape:
                raise MergeError("tertiary", f"{key}: B has shape {tuple(tensor.shape)}, C has {tuple(c[key].shape)}")
            result[key] = tensor - c[key]
        else:
            result[key] = torch.zeros_like(tensor)
    return result


def _merge_tensor(key: str, a: torch.Tensor, b: torch.Tensor, combine, multiplier: float) -> tuple[torch.Tensor, str | None]:
    """The merged tensor, and "inpainting"/"instruct-pix2pix" when only A's first 4 channels merged."""
    if a.shape == b.shape:
        return combine(a, b, multiplier), None
    same_but_channels = a.dim() == 4 and b.dim() == 4 and a.shape[0] == b.shape[0] and a.shape[2:] == b.shape[2:]
    if not same_but_channels:
        raise MergeError("secondary", f"{key}: A has shape {tuple(a.shape)}, B has {tuple(b.shape)}; "
                                      "these models are not of the same architecture")
    if a.shape[1] == 4 and b.shape[1] in (8, 9):
        kind = "inpainting" if b.shape[1] == 9 else "instruct-pix2pix"
        raise MergeError("primary", f"When merging {kind} model with a normal one, A must be the {kind} model.")
    if a.shape[1] not in (8, 9) or b.shape[1] != 4:
        raise MergeError("secondary", f"Bad dimensions for merged layer {key}: A={tuple(a.shape)}, B={tuple(b.shape)}")
    merged = a.clone()
    merged[:, 0:4] = combine(a[:, 0:4], b, multiplier)
    return merged, "inpainting" if a.shape[1] == 9 else "instruct-pix2pix"


def bake_in_vae(state_dict: StateDict, vae: Mapping[str, torch.Tensor], save_as_half: bool) -> int:
    """Replace the checkpoint's ``first_stage_model.*`` tensors by a VAE file's; returns how many.

    VAE files store keys without the prefix (some carry it); keys the checkpoint lacks are ignored,
    as in A1111. A file that matches nothing (e.g. a diffusers-layout VAE) is an error, not a no-op.
    """
    replaced = 0
    for key, tensor in vae.items():
        if key.startswith("loss") or key in _VAE_IGNORED:
            continue
        target = key if key.startswith(VAE_PREFIX) else VAE_PREFIX + key
        if target in state_dict:
            state_dict[target] = to_half(tensor, save_as_half)
            replaced += 1
    if not replaced:
        raise MergeError("vae", "the VAE file has no tensors in the checkpoint's first_stage_model layout")
    return replaced


def discard(state_dict: StateDict, pattern: str | re.Pattern) -> list[str]:
    """Drop every key the regex finds (``re.search``); returns the dropped keys."""
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    dropped = [key for key in state_dict if regex.search(key)]
    for key in dropped:
        del state_dict[key]
    return dropped


def merge_state_dicts(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor] | None = None,
                      c: Mapping[str, torch.Tensor] | None = None, method: str = WEIGHTED_SUM,
                      multiplier: float = 0.3, *, save_as_half: bool = False,
                      vae: Mapping[str, torch.Tensor] | None = None, discard_weights: str = "") -> MergeResult:
    """Merge A with B (and C) by ``method``; see the module docstring for the exact rules."""
    if method not in METHODS:
        raise ValueError(f"unknown interpolation method {method!r}; use one of {', '.join(METHODS)}")
    if needs_secondary(method) and b is None:
        raise MergeError("secondary", f"{method} requires a secondary model (B)")
    if needs_tertiary(method) and c is None:
        raise MergeError("tertiary", f"{method} requires a tertiary model (C)")

    result = MergeResult(dict(a))
    merged = result.state_dict
    if needs_secondary(method):
        theta_1 = difference(b, c) if needs_tertiary(method) else b
        combine = _combine(method)
        for key, tensor in a.items():
            if not _mergeable(key, tensor) or key not in theta_1:
                continue
            merged[key], kind = _merge_tensor(key, tensor, theta_1[key], combine, multiplier)
            result.is_inpainting |= kind == "inpainting"
            result.is_instruct_pix2pix |= kind == "instruct-pix2pix"
            merged[key] = to_half(merged[key], save_as_half)

    if vae is not None:
        bake_in_vae(merged, vae, save_as_half)
    if save_as_half and not needs_secondary(method):
        for key, tensor in merged.items():
            merged[key] = to_half(tensor, True)
    if discard_weights:
        discard(merged, discard_weights)
    return result
