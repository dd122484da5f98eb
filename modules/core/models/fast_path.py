"""The fast path (``--compile`` / setting ``compile_unet``): the U-Net compiled by torch.compile.

- ``nn.Module.compile`` compiles the U-Net's call in place, so every caller gets the compiled code.
- Compiled graphs are specialised to shapes. The first call at a new batch size, resolution or
  prompt length (in 77-token chunks) compiles again, and after one such change torch marks the
  changing dimension dynamic instead. Prompt *text* changes never recompile. Buckets worth keeping
  for speed: batch sizes 1/2/4/8 and resolutions in steps of 64 px.
- On CUDA the U-Net also goes channels-last (faster convolutions with cuDNN).
- Inductor's compiled kernels are cached on disk (``TORCHINDUCTOR_CACHE_DIR``, set by webui.py to
  ``<data dir>/cache/torchinductor``), so a restart does not compile from scratch.
- Not combined with --medvram/--lowvram: their hooks move weights during the call.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("hanga")


def is_compiled(unet: torch.nn.Module) -> bool:
    return getattr(unet, "_compiled_call_impl", None) is not None


def enable_fast_path(unet: torch.nn.Module, device: torch.device) -> None:
    if is_compiled(unet):
        return
    if device.type == "cuda":
        unet.to(memory_format=torch.channels_last)
    unet.compile()
    log.info("U-Net compiled with torch.compile (the first generation at each new size compiles; later ones are fast)")
