"""A1111 facade: ``modules.devices`` — the device and dtypes Hanga generates with. Moving weights
stays the memory manager's job; extensions only read these."""

from __future__ import annotations

from typing import Any

import torch

from modules.service.extensions import context

cpu = torch.device("cpu")


def _policy():
    service = context.current().service
    return service.models.memory.policy if service is not None else None


def get_optimal_device():
    policy = _policy()
    return policy.device if policy is not None else cpu


def get_optimal_device_name() -> str:
    return str(get_optimal_device())


def torch_gc() -> None:
    service = context.current().service
    if service is not None:
        service.models.memory.collect()


def __getattr__(name: str) -> Any:  # PEP 562: known once Hanga runs
    policy = _policy()
    if name in ("device", "device_interrogate", "device_gfpgan", "device_esrgan", "device_codeformer"):
        return policy.device if policy is not None else cpu
    if name in ("dtype", "dtype_unet", "dtype_inference"):
        return policy.unet_dtype if policy is not None else torch.float32
    if name == "dtype_vae":
        return policy.vae_dtype if policy is not None else torch.float32
    raise AttributeError(f"module 'modules.devices' has no attribute {name!r}")
