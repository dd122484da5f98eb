"""LoRA / LoCon files (kohya ``lora_unet_*``/``lora_te_*`` keys, or diffusers/PEFT ``lora_A``/``lora_B``)
merged into a loaded model's weights for one job and taken out again exactly.

``ΔW = up · down · (alpha / rank) · multiplier`` per module; convolutions (LoCon) multiply the
flattened kernels. The text-encoder multiplier applies to text-encoder modules and the U-Net
multiplier to U-Net modules (``<lora:name:te[:unet]>``). ``LoraPatch`` keeps a copy of every weight
it changes, so removing it puts the original bits back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

import torch

_PATCHABLE = (torch.nn.Linear, torch.nn.Conv2d)


@dataclass(frozen=True)
class LoraModule:
    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None  # None: scale 1 (alpha = rank)

    def delta(self, shape: torch.Size) -> torch.Tensor:
        down, up = self.down.float(), self.up.float()
        rank = down.shape[0]
        scale = (self.alpha / rank) if self.alpha is not None else 1.0
        product = up.reshape(up.shape[0], -1) @ down.reshape(rank, -1)
        return (product * scale).reshape(shape)


@dataclass
class Lora:
    name: str
    unet: dict[str, LoraModule] = field(default_factory=dict)  # by diffusers module path
    text_encoder: dict[str, LoraModule] = field(default_factory=dict)
    unmatched: int = 0  # keys no module of this model answers to


def _kohya_names(model: torch.nn.Module, prefix: str, extra: str = "") -> dict[str, str]:
    """kohya's flattened module names (``lora_unet_down_blocks_0_…``) → module paths."""
    return {prefix + extra + name.replace(".", "_"): name for name, module in model.named_modules()
            if isinstance(module, _PATCHABLE)}


def parse_lora(state_dict: Mapping[str, torch.Tensor], name: str, unet: torch.nn.Module,
               text_encoder: torch.nn.Module) -> Lora:
    """Group a LoRA file's tensors by the module of ``unet``/``text_encoder`` they change."""
    kohya = {**{key: ("unet", path) for key, path in _kohya_names(unet, "lora_unet_").items()},
             **{key: ("te", path) for key, path in _kohya_names(text_encoder, "lora_te_", "text_model_").items()}}
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unmatched = set()
    for key, tensor in state_dict.items():
        target, role = _locate(key, kohya)
        if target is None:
            unmatched.add(key.split(".")[0])
            continue
        parts.setdefault(target, {})[role] = tensor
    lora = Lora(name=name)
    for (where, path), found in parts.items():
        if "down" not in found or "up" not in found:
            unmatched.add(path)
            continue
        alpha = float(found["alpha"]) if "alpha" in found else None
        (lora.unet if where == "unet" else lora.text_encoder)[path] = LoraModule(found["down"], found["up"], alpha)
    lora.unmatched = len(unmatched)
    if not lora.unet and not lora.text_encoder:
        raise ValueError("no LoRA weights for this model's modules (an SD2/SDXL LoRA, or not a LoRA)")
    return lora


_ROLES = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha",
          "lora_A.weight": "down", "lora_B.weight": "up", "lora.down.weight": "down", "lora.up.weight": "up"}


def _locate(key: str, kohya: Mapping[str, tuple[str, str]]) -> tuple[tuple[str, str] | None, str]:
    for suffix, role in _ROLES.items():
        if not key.endswith("." + suffix):
            continue
        stem = key[: -len(suffix) - 1]
        if stem in kohya:
            return kohya[stem], role
        for prefix, where in (("unet.", "unet"), ("text_encoder.", "te")):  # diffusers / PEFT names
            if stem.startswith(prefix):
                path = stem[len(prefix):]
                path = path[len("text_model."):] if where == "te" and path.startswith("text_model.") else path
                return (where, path), role
        return None, role
    return None, ""


class LoraPatch:
    """Weights changed by merged LoRAs, with their originals kept for ``restore``."""

    def __init__(self):
        self._originals: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
        self.active: tuple = ()  # what is merged: (name, te, unet) per LoRA
        self.model: object = None  # the model it is merged into

    @torch.no_grad()
    def merge(self, model: torch.nn.Module, modules: Mapping[str, LoraModule], multiplier: float) -> None:
        if multiplier == 0:
            return
        named = dict(model.named_modules())
        for path, lora_module in modules.items():
            target = named.get(path)
            if not isinstance(target, _PATCHABLE):
                continue
            weight = target.weight
            if id(weight) not in self._originals:
                self._originals[id(weight)] = (weight, weight.detach().clone())
            delta = lora_module.delta(weight.shape).to(device=weight.device)
            weight.copy_((weight.float() + delta * multiplier).to(weight.dtype))

    @torch.no_grad()
    def restore(self) -> None:
        for weight, original in self._originals.values():
            weight.copy_(original)
        self._originals.clear()
        self.active = ()


class LoraSource(Protocol):
    """Where a job gets LoRAs by name or alias (the service reads and caches the files)."""

    def load(self, name: str, unet: torch.nn.Module, text_encoder: torch.nn.Module) -> Lora | None: ...
    def short_hash(self, name: str) -> str | None: ...


def lora_calls(calls: Sequence) -> list[tuple[str, float, float]]:
    """(name, text-encoder multiplier, U-Net multiplier) of ``<lora:…>``/``<lyco:…>`` calls:
    positional ``name:te[:unet]`` or named ``te=``/``unet=``; the U-Net's defaults to the text encoder's."""
    result = []
    for call in calls:
        if call.kind not in ("lora", "lyco") or not call.positional:
            continue
        positional = call.positional
        te = float(call.named.get("te", positional[1] if len(positional) > 1 else 1.0))
        unet = float(call.named.get("unet", positional[2] if len(positional) > 2 else te))
        result.append((positional[0], te, unet))
    return result
