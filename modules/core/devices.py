"""Device and dtype policy, and the memory manager: the only code that moves weights between devices.

Decisions follow A1111's flags: ``--use-cpu all|sd`` keeps generation on the CPU; ``--no-half`` and
``--precision full`` keep every weight in float32; ``--no-half-vae`` keeps the VAE in float32. Half
precision is only used on CUDA: CPU kernels in fp16 are slow and some are missing.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch

from modules.core.offload import Mover, Offloader, TierFlags, choose_tier

log = logging.getLogger("hanga")


@dataclass(frozen=True)
class DevicePolicy:
    device: torch.device
    unet_dtype: torch.dtype
    text_encoder_dtype: torch.dtype
    vae_dtype: torch.dtype

    @classmethod
    def choose(
        cls,
        use_cpu: Iterable[str] = (),
        no_half: bool = False,
        no_half_vae: bool = False,
        precision: str = "autocast",
        device_id: int | None = None,
        cuda_available: bool | None = None,
    ) -> "DevicePolicy":
        cpu_requested = {"all", "sd"} & {name.lower() for name in use_cpu}
        if cuda_available is None:
            cuda_available = torch.cuda.is_available()
        if cpu_requested or not cuda_available:
            device = torch.device("cpu")
        else:
            device = torch.device("cuda", device_id) if device_id is not None else torch.device("cuda")
        full = no_half or precision == "full" or device.type == "cpu"
        weights = torch.float32 if full else torch.float16
        vae = torch.float32 if (full or no_half_vae) else torch.float16
        return cls(device=device, unet_dtype=weights, text_encoder_dtype=weights, vae_dtype=vae)

    def describe(self) -> str:
        def name(dtype: torch.dtype) -> str:
            return str(dtype).removeprefix("torch.")

        return (
            f"device {self.device}, UNet {name(self.unet_dtype)}, text encoder "
            f"{name(self.text_encoder_dtype)}, VAE {name(self.vae_dtype)}"
        )


class MemoryManager:
    """Places model components on the generation device in the policy's dtypes, and takes them off.

    In the default tier a loaded model sits on the device whole. Under --medvram / --lowvram (or
    when the automatic choice takes one, see ``offload.choose_tier``) its components wait in RAM and
    an ``Offloader`` brings each onto the device when it runs. Nothing else moves model weights.
    """

    def __init__(self, policy: DevicePolicy, tiers: TierFlags = TierFlags(auto=False),
                 free_memory: Callable[[], int | None] | None = None, mover: Mover | None = None):
        """``free_memory`` reports free device memory in bytes (default: CUDA's); ``mover`` moves a
        module to a device (tests record the decisions with their own)."""
        self.policy = policy
        self.tiers = tiers
        self.free_memory = free_memory or self._cuda_free
        self.mover = mover
        self._offloaders: dict[int, Offloader] = {}  # by id of the U-Net they serve
        self.tier_of: dict[int, str] = {}

    @property
    def device(self) -> torch.device:
        return self.policy.device

    def _cuda_free(self) -> int | None:
        if self.policy.device.type != "cuda" or not torch.cuda.is_available():
            return None
        return torch.cuda.mem_get_info(self.policy.device)[0]

    def loads_onto_device(self) -> bool:
        """Whether a checkpoint can be created on the device directly: only when no tier can send
        it back to RAM (else it is created in RAM and placed)."""
        flags = self.tiers
        if self.policy.device.type != "cuda":
            return True
        if flags.lowvram or flags.medvram or flags.medvram_sdxl:
            return False
        free = self.free_memory() if flags.auto else None
        return free is None or choose_tier(flags, True, self.policy.device, free) == "default"

    def place(self, unet: torch.nn.Module, text_encoder: torch.nn.Module, vae: torch.nn.Module,
              *more_text_encoders: torch.nn.Module, sdxl: bool = False) -> str:
        """Put a loaded model where its tier wants it; returns the tier."""
        p = self.policy
        tier = choose_tier(self.tiers, sdxl, p.device, self.free_memory() if self.tiers.auto else None)
        self.tier_of[id(unet)] = tier
        if tier == "default":
            _move(unet, p.device, p.unet_dtype)
            for encoder in (text_encoder, *more_text_encoders):
                _move(encoder, p.device, p.text_encoder_dtype)
            _move(vae, p.device, p.vae_dtype)
            return tier
        offload = torch.device("cpu")
        _move(unet, offload, p.unet_dtype)
        for encoder in (text_encoder, *more_text_encoders):
            _move(encoder, offload, p.text_encoder_dtype)
        _move(vae, offload, p.vae_dtype)
        offloader = self._offloaders.pop(id(unet), None)
        if offloader is not None:
            offloader.detach()
        offloader = Offloader(p.device, lowvram=tier == "lowvram", offload=offload, mover=self.mover)
        offloader.attach(unet, (text_encoder, *more_text_encoders), vae)
        self._offloaders[id(unet)] = offloader
        return tier

    def place_network(self, module: torch.nn.Module) -> None:
        """A small add-on network (hypernetwork): on the generation device, in float32 as A1111
        keeps them (its input is cast to float and its output back)."""
        _move(module, self.policy.device, torch.float32)

    def release(self, *modules: torch.nn.Module) -> None:
        """Move modules off the accelerator and return the freed memory to the system (a model's
        offload hooks go with it)."""
        for module in modules:
            offloader = self._offloaders.pop(id(module), None)
            if offloader is not None:
                offloader.detach()
            self.tier_of.pop(id(module), None)
            module.to(device="cpu")
        self.collect()

    def collect(self) -> None:
        gc.collect()
        if self.policy.device.type == "cuda":
            torch.cuda.empty_cache()


def return_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``). glibc keeps what
    a job freed for reuse, so without this the RSS stays at the biggest job's peak and climbs with
    each new largest size or batch (the soak measured ~50-70 MB over a few hundred mixed jobs on the
    tiny model); a trim takes milliseconds. Elsewhere than glibc it does nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


@contextmanager
def in_float32(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The module's weights in float32 for the duration, then back in their dtype (a VAE whose
    half-precision decode gave NaNs decodes once more this way, as diffusers upcasts its VAE)."""
    dtype = next(module.parameters()).dtype
    if dtype == torch.float32:
        yield module
        return
    module.to(dtype=torch.float32)
    try:
        yield module
    finally:
        module.to(dtype=dtype)


def _move(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Cast only when needed: diffusers warns on every ``.to(dtype=…)``, even a no-op one."""
    if any(parameter.dtype != dtype for parameter in module.parameters()):
        module.to(dtype=dtype)
    module.to(device=device)
