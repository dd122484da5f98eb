"""Put a checkpoint's converted tensors into a module built without weights."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("hanga")


def assign_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    expected = set(module.state_dict().keys())
    missing = sorted(expected - weights.keys())
    if missing:
        raise ValueError(f"the {what} is incomplete: {len(missing)} tensors missing (first: {missing[0]})")
    unused = sorted(weights.keys() - expected)
    if unused:
        log.debug("%s: ignoring %d unexpected tensors (first: %s)", what, len(unused), unused[0])
    module.load_state_dict({k: weights[k] for k in expected}, strict=True, assign=True)
    module.eval().requires_grad_(False)
