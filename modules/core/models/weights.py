"""Put a checkpoint's converted tensors into a module built without weights."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("hanga")


def assign_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], what: str,
                   device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
    """Give a module built without weights the checkpoint's tensors, each put straight onto
    ``device`` in ``dtype`` (floating-point tensors only) as it is taken: no full-precision copy
    of the model is made on the way."""
    expected = set(module.state_dict().keys())
    missing = sorted(expected - weights.keys())
    if missing:
        raise ValueError(f"the {what} is incomplete: {len(missing)} tensors missing (first: {missing[0]})")
    unused = sorted(weights.keys() - expected)
    if unused:
        log.debug("%s: ignoring %d unexpected tensors (first: %s)", what, len(unused), unused[0])
    def placed(tensor: torch.Tensor) -> torch.Tensor:
        if dtype is not None and tensor.is_floating_point():
            return tensor.to(device=device, dtype=dtype)
        return tensor.to(device=device) if device is not None else tensor

    module.load_state_dict({k: placed(weights[k]) for k in expected}, strict=True, assign=True)
    module.eval().requires_grad_(False)
