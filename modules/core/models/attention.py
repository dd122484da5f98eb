"""Cross-attention backends (A1111's ``cross_attention_optimization`` setting and --opt-* flags),
set through diffusers' attention-processor API.

- "sdp" (the default; "Automatic"): PyTorch's scaled_dot_product_attention, which picks a fused
  kernel (flash or memory-efficient) where the device has one.
- "sdp-no-mem": the same without the memory-efficient kernel (A1111's --opt-sdp-no-mem-attention,
  for reproducible results on GPUs where that kernel is not deterministic).
- "xformers": xformers' memory-efficient attention (optional GPU extra; a clear message and SDPA
  when it is not installed).
- "sliced" (A1111's "Doggettx", "sub-quadratic", "V1", "InvokeAI", --opt-split-attention*,
  --opt-sub-quad-attention): attention computed a slice of heads at a time, the choice for devices
  without fused kernels that are short of memory.
- "None": plain attention.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, SlicedAttnProcessor

log = logging.getLogger("hanga")

CHOICES = ("Automatic", "None", "xformers", "Doggettx", "sub-quadratic", "V1", "InvokeAI", "sdp", "sdp-no-mem")
_SLICED = {"Doggettx", "sub-quadratic", "V1", "InvokeAI"}


class SdpaWithoutMemEfficient(AttnProcessor2_0):
    """SDPA restricted to the flash and math kernels."""

    def __call__(self, *args, **kwargs):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
            return super().__call__(*args, **kwargs)


def choice_from_flags(flags) -> str | None:
    """The backend the command line asks for (it wins over the setting), or None."""
    if getattr(flags, "xformers", False) or getattr(flags, "force_enable_xformers", False):
        return "xformers"
    if getattr(flags, "opt_sdp_no_mem_attention", False):
        return "sdp-no-mem"
    if getattr(flags, "opt_sdp_attention", False):
        return "sdp"
    if getattr(flags, "opt_sub_quad_attention", False):
        return "sub-quadratic"
    if getattr(flags, "opt_split_attention", False) or getattr(flags, "opt_split_attention_v1", False) \
            or getattr(flags, "opt_split_attention_invokeai", False):
        return "Doggettx"
    if getattr(flags, "disable_opt_split_attention", False):
        return "None"
    return None


def xformers_available() -> bool:
    return importlib.util.find_spec("xformers") is not None


def resolve(choice: str, device: torch.device) -> str:
    """A setting value → "sdp" | "sdp-no-mem" | "xformers" | "sliced" | "plain"."""
    if choice not in CHOICES:
        raise ValueError(f"cross_attention_optimization must be one of {', '.join(CHOICES)}; got {choice!r}")
    if choice == "xformers":
        if device.type == "cuda" and xformers_available():
            return "xformers"
        log.warning("xformers was asked for but %s; using PyTorch's scaled-dot-product attention instead "
                    "(install the GPU extra: pip install xformers)",
                    "it is not installed" if not xformers_available() else "it needs a CUDA GPU")
        return "sdp"
    if choice in _SLICED:
        return "sliced"
    return {"Automatic": "sdp", "None": "plain", "sdp": "sdp", "sdp-no-mem": "sdp-no-mem"}[choice]


def apply_attention(unet, choice: str, device: torch.device) -> str:
    """Set every attention processor of the U-Net for ``choice``; returns the backend used."""
    backend = resolve(choice, device)
    if backend == "xformers":
        unet.enable_xformers_memory_efficient_attention()
    elif backend == "sliced":
        unet.set_attention_slice("auto")
    elif backend == "plain":
        unet.set_attn_processor(AttnProcessor())
    elif backend == "sdp-no-mem":
        unet.set_attn_processor(SdpaWithoutMemEfficient())
    else:
        unet.set_attn_processor(AttnProcessor2_0())
    return backend


def processor_kinds(unet) -> set[type]:
    return {type(processor) for processor in unet.attn_processors.values()}


__all__ = ["CHOICES", "apply_attention", "choice_from_flags", "processor_kinds", "resolve", "SlicedAttnProcessor"]
