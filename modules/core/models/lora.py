"""LoRA / LoCon files (kohya ``lora_unet_*``/``lora_te_*`` keys, or diffusers/PEFT ``lora_A``/``lora_B``)
merged into a loaded model's weights for one job and taken out again exactly.

SD1/SD2 kohya files name U-Net modules by diffusers' paths; SDXL ones by the original (LDM/SGM)
paths (``lora_unet_input_blocks_4_1_…``), and name the two text encoders ``lora_te1_``/``lora_te2_``.
The loader records each U-Net module's original name, so both spellings find their module.

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
    """One module's change, by the parts a file gives (A1111's network types):
    LoRA/LoCon ``up·down``; LoHa ``(w1a·w1b) ⊙ (w2a·w2b)``; LoKr ``w1 ⊗ w2`` (each factor whole or
    as a product of two); a full ``diff``. Scaled by ``alpha / rank`` when the file gives alpha."""

    parts: Mapping[str, torch.Tensor]
    alpha: float | None  # None: scale 1 (alpha = rank)

    @property
    def kind(self) -> str:
        parts = self.parts
        if "down" in parts:
            return "lora"
        if "hada_w1_a" in parts:
            return "loha"
        if any(name.startswith("lokr_") for name in parts):
            return "lokr"
        return "full"

    def _scale(self, rank: int | None) -> float:
        return self.alpha / rank if self.alpha is not None and rank else 1.0

    def delta(self, shape: torch.Size) -> torch.Tensor:
        p = {name: tensor.float() for name, tensor in self.parts.items()}
        kind = self.kind
        if kind == "lora":
            down, up = p["down"], p["up"]
            rank = down.shape[0]
            product = up.reshape(up.shape[0], -1) @ down.reshape(rank, -1)
            return (product * self._scale(rank)).reshape(shape)
        if kind == "loha":
            rank = p["hada_w1_b"].shape[0]
            first = p["hada_w1_a"] @ p["hada_w1_b"].reshape(rank, -1)
            second = p["hada_w2_a"] @ p["hada_w2_b"].reshape(p["hada_w2_b"].shape[0], -1)
            return (first * second * self._scale(rank)).reshape(shape)
        if kind == "lokr":
            w1 = p["lokr_w1"] if "lokr_w1" in p else p["lokr_w1_a"] @ p["lokr_w1_b"]
            w2 = p["lokr_w2"] if "lokr_w2" in p else p["lokr_w2_a"] @ p["lokr_w2_b"].reshape(p["lokr_w2_b"].shape[0], -1)
            rank = p["lokr_w1_b"].shape[0] if "lokr_w1_b" in p else p["lokr_w2_b"].shape[0] if "lokr_w2_b" in p else None
            if w2.ndim == 4:  # a whole convolution kernel; a 2-D w2 of a convolution holds (out, in·k·k)
                w1 = w1[:, :, None, None]
            return (torch.kron(w1, w2) * self._scale(rank)).reshape(shape)
        return p["diff"].reshape(shape)


@dataclass
class Lora:
    name: str
    unet: dict[str, LoraModule] = field(default_factory=dict)  # by diffusers module path
    text_encoder: dict[str, LoraModule] = field(default_factory=dict)
    text_encoder_2: dict[str, LoraModule] = field(default_factory=dict)  # SDXL's bigG
    unmatched: int = 0  # keys no module of this model answers to


def _text_model_prefix(model: torch.nn.Module) -> str:
    """kohya names text-encoder modules from ``text_model``; transformers 5's CLIPTextModel has no
    such level (its paths start at ``encoder.``), CLIPTextModelWithProjection keeps it."""
    return "" if hasattr(model, "text_model") else "text_model_"


def _kohya_names(model: torch.nn.Module, prefix: str, extra: str = "") -> dict[str, str]:
    """kohya's flattened module names (``lora_unet_down_blocks_0_…``) → module paths."""
    return {prefix + extra + name.replace(".", "_"): name for name, module in model.named_modules()
            if isinstance(module, _PATCHABLE)}


def parse_lora(state_dict: Mapping[str, torch.Tensor], name: str, unet: torch.nn.Module,
               text_encoder: torch.nn.Module, text_encoder_2: torch.nn.Module | None = None,
               unet_ldm_names: Mapping[str, str] | None = None) -> Lora:
    """Group a LoRA file's tensors by the module of ``unet``/``text_encoder``(``_2``) they change.
    ``unet_ldm_names`` maps U-Net module paths to their original checkpoint names."""
    kohya = {key: ("unet", path) for key, path in _kohya_names(unet, "lora_unet_").items()}
    kohya.update({"lora_unet_" + ldm.replace(".", "_"): ("unet", path) for path, ldm in (unet_ldm_names or {}).items()})
    encoders = {"te": text_encoder, "te2": text_encoder_2}
    if text_encoder_2 is None:
        prefixes = {"te": "lora_te_"}
    else:
        prefixes = {"te": "lora_te1_", "te2": "lora_te2_"}
    for where, prefix in prefixes.items():
        model = encoders[where]
        kohya.update({key: (where, path) for key, path in
                      _kohya_names(model, prefix, _text_model_prefix(model)).items()})
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unmatched = set()
    for key, tensor in state_dict.items():
        target, role = _locate(key, kohya)
        if target is not None and target[0] != "unet":
            target = _resolve_text_path(target, encoders)
        if target is None:
            unmatched.add(key.split(".")[0])
            continue
        parts.setdefault(target, {})[role] = tensor
    lora = Lora(name=name)
    by_place = {"unet": lora.unet, "te": lora.text_encoder, "te2": lora.text_encoder_2}
    for (where, path), found in parts.items():
        alpha = float(found.pop("alpha")) if "alpha" in found else None
        if not _complete(found):
            unmatched.add(path)
            continue
        by_place[where][path] = LoraModule(found, alpha)
    lora.unmatched = len(unmatched)
    if not lora.unet and not lora.text_encoder and not lora.text_encoder_2:
        raise ValueError("no LoRA weights for this model's modules (a LoRA for another model family, or not a LoRA)")
    return lora


def _resolve_text_path(target: tuple[str, str], encoders: Mapping[str, torch.nn.Module | None]) -> tuple[str, str] | None:
    """A diffusers/PEFT text-encoder path, with or without ``text_model.``, as the module has it."""
    where, path = target
    model = encoders.get(where)
    if model is None:
        return None
    if hasattr(model, "text_model"):
        return where, path if path.startswith("text_model.") else "text_model." + path
    return where, path.removeprefix("text_model.")


_ROLES = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha",
          "lora_A.weight": "down", "lora_B.weight": "up", "lora.down.weight": "down", "lora.up.weight": "up",
          **{name: name for name in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "lokr_w1", "lokr_w1_a",
                                     "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "diff")}}


def _complete(found: Mapping[str, torch.Tensor]) -> bool:
    """Whether a module's parts make one of the supported network types (Tucker-decomposed
    convolutions, ``hada_t*``/``lokr_t2``, are not among them)."""
    names = set(found)
    if {"down", "up"} <= names:
        return True
    if {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= names:
        return True
    has = lambda side: f"lokr_{side}" in names or {f"lokr_{side}_a", f"lokr_{side}_b"} <= names  # noqa: E731
    if has("w1") and has("w2"):
        return True
    return names == {"diff"}


def _locate(key: str, kohya: Mapping[str, tuple[str, str]]) -> tuple[tuple[str, str] | None, str]:
    for suffix, role in _ROLES.items():
        if not key.endswith("." + suffix):
            continue
        stem = key[: -len(suffix) - 1]
        if stem in kohya:
            return kohya[stem], role
        for prefix, where in (("unet.", "unet"), ("text_encoder.", "te"), ("text_encoder_2.", "te2")):  # diffusers / PEFT
            if stem.startswith(prefix):
                return (where, stem[len(prefix):]), role
        return None, role
    return None, ""


class LoraPatch:
    """Weights changed by merged LoRAs, with their originals kept for ``restore``."""

    def __init__(self):
        self._originals: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}

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


class LoraSource(Protocol):
    """Where a job gets LoRAs by name or alias (the service reads and caches the files), parsed
    for ``model`` (a loaded StableDiffusionModel)."""

    def load(self, name: str, model) -> Lora | None: ...
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
