"""--medvram and --lowvram: model components wait off the device and come onto it when they run.

A forward pre-hook (torch's own extension point) on each component brings it onto the generation
device and sends the previous one back, so only one of text encoder(s), U-Net and VAE sits on the
device at a time (``medvram``). ``lowvram`` goes further for the U-Net: only its small parts come
with it, and each of its big blocks (down, middle, up) comes onto the device just before it runs
and leaves when the next one arrives. The hooks also move a component's tensor inputs to the
device, since the code that calls it may have made them where the component was waiting.

Which tier to use (``choose_tier``): the flags decide; without any, a CUDA device picks by its free
memory, with the thresholds in ``AUTO_GIB``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch

TIERS = ("default", "medvram", "lowvram")

# Free VRAM (GiB) below which the automatic choice takes a tier: (lowvram below, medvram below).
# SD1/SD2 in fp16: the weights take ~2.1 GiB and 512² all on the device peaks near 2.6 GiB; --medvram
# peaks near 1.8 GiB. SDXL: ~6.9 GiB of weights, 1024² peaks near 11.5 GiB all on the device and near
# 5.2 GiB with the components taking turns.
AUTO_GIB = {"sd": (2.0, 3.5), "sdxl": (6.0, 12.0)}

Mover = Callable[[torch.nn.Module, torch.device], None]


@dataclass(frozen=True)
class TierFlags:
    medvram: bool = False
    medvram_sdxl: bool = False
    lowvram: bool = False
    auto: bool = True  # choose from free VRAM when no flag asks for a tier


def choose_tier(flags: TierFlags, is_sdxl: bool, device: torch.device, free_bytes: int | None) -> str:
    if device.type != "cuda":
        return "default"  # the CPU (and MPS, which shares memory) has nothing to offload to
    if flags.lowvram:
        return "lowvram"
    if flags.medvram or (flags.medvram_sdxl and is_sdxl):
        return "medvram"
    if not flags.auto or free_bytes is None:
        return "default"
    low, med = AUTO_GIB["sdxl" if is_sdxl else "sd"]
    free = free_bytes / 2**30
    return "lowvram" if free < low else "medvram" if free < med else "default"


def _to_device(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(item, device) for item in value)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    return value


def _default_mover(module: torch.nn.Module, device: torch.device) -> None:
    module.to(device=device)


class Offloader:
    """The hooks of one loaded model under --medvram or --lowvram."""

    def __init__(self, device: torch.device, lowvram: bool = False, offload: torch.device = torch.device("cpu"),
                 mover: Mover | None = None):
        self.device, self.lowvram, self.offload = device, lowvram, offload
        self.move = mover or _default_mover
        self.current: tuple[torch.nn.Module, ...] = ()  # the component's modules now on the device
        self.block: torch.nn.Module | None = None  # --lowvram: the U-Net block now on the device
        self._handles: list = []

    def attach(self, unet: torch.nn.Module, text_encoders: Iterable[torch.nn.Module], vae: torch.nn.Module) -> None:
        for encoder in text_encoders:
            self._on_call(encoder, (encoder,))
        if self.lowvram:
            blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
            blocks = [block for block in blocks if block is not None]
            small = tuple(child for child in unet.children()
                          if not isinstance(child, torch.nn.ModuleList) and child is not unet.mid_block)
            self._on_call(unet, small)
            for block in blocks:
                self._handles.append(block.register_forward_pre_hook(self._stream_hook(block)))
        else:
            self._on_call(unet, (unet,))
        # the decoder's conv_in too: a tiled decode calls the decoder's parts, not the decoder
        for part in (vae.encoder, vae.quant_conv, vae.post_quant_conv, vae.decoder, vae.decoder.conv_in):
            if part is not None:
                self._on_call(part, (vae,))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.current, self.block = (), None

    def _on_call(self, trigger: torch.nn.Module, modules: tuple[torch.nn.Module, ...]) -> None:
        def hook(module, args, kwargs):
            self.bring(modules)
            return _to_device(args, self.device), _to_device(kwargs, self.device)

        self._handles.append(trigger.register_forward_pre_hook(hook, with_kwargs=True))

    def bring(self, modules: tuple[torch.nn.Module, ...]) -> None:
        """Put ``modules`` on the device, sending the previous component (and block) away."""
        if len(modules) == len(self.current) and all(a is b for a, b in zip(modules, self.current)):
            return
        if self.block is not None:
            self.move(self.block, self.offload)
            self.block = None
        for module in self.current:
            self.move(module, self.offload)
        for module in modules:
            self.move(module, self.device)
        self.current = modules

    def _stream_hook(self, block: torch.nn.Module):
        def hook(module, args):
            if self.block is block:
                return None
            if self.block is not None:
                self.move(self.block, self.offload)
            self.move(block, self.device)
            self.block = block
            return None

        return hook
