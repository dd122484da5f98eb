"""Which model family a single-file checkpoint belongs to, decided from its tensors (never its name).

The tests and their order follow A1111 (``a1111-compat.md`` §6.1), with one widening: any OpenCLIP
text tower under ``cond_stage_model.model.`` means SD2, whatever its width (A1111 asks for 1024, the
width of every published SD2 model). The loader reads widths from the tensors, so a distilled or
pruned SD2 with a narrower encoder loads too, and nothing else uses that layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

UNET = "model.diffusion_model."


@dataclass(frozen=True)
class Detected:
    family: str  # sd1, sd2, sdxl, sdxl-refiner, sd3, sd2-depth, sd2-unclip, alt-diffusion
    label: str
    variant: str | None = None  # "inpaint", "instruct-pix2pix", "ssd-1b"


def _in_channels(sd: Mapping[str, torch.Tensor]) -> int | None:
    weight = sd.get(UNET + "input_blocks.0.0.weight")
    return int(weight.shape[1]) if weight is not None else None


def _variant(in_channels: int | None) -> str | None:
    return {9: "inpaint", 8: "instruct-pix2pix"}.get(in_channels or 4)


def detect_family(sd: Mapping[str, torch.Tensor]) -> Detected:
    in_ch = _in_channels(sd)
    if UNET + "x_embedder.proj.weight" in sd:
        return Detected("sd3", "Stable Diffusion 3")
    if "conditioner.embedders.1.model.ln_final.weight" in sd:
        ssd = UNET + "middle_block.1.transformer_blocks.0.attn1.to_q.weight" not in sd
        return Detected("sdxl", "SDXL", "ssd-1b" if ssd else _variant(in_ch))
    if "conditioner.embedders.0.model.ln_final.weight" in sd:
        return Detected("sdxl-refiner", "SDXL refiner", _variant(in_ch))
    if "depth_model.model.pretrained.act_postprocess3.0.project.0.bias" in sd:
        return Detected("sd2-depth", "Stable Diffusion 2 depth")
    if "embedder.model.ln_final.weight" in sd:
        return Detected("sd2-unclip", "Stable Diffusion 2.1 unCLIP")
    open_clip = sd.get("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight")
    if open_clip is not None:
        return Detected("sd2", "Stable Diffusion 2.x", _variant(in_ch))
    if "cond_stage_model.roberta.embeddings.word_embeddings.weight" in sd:
        return Detected("alt-diffusion", "AltDiffusion")
    if UNET + "input_blocks.0.0.weight" not in sd:
        raise ValueError("no Stable Diffusion U-Net found (no 'model.diffusion_model.*' tensors)")
    return Detected("sd1", "Stable Diffusion 1.x", _variant(in_ch))
