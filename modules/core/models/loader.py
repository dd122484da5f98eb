"""Load an A1111/original single-file checkpoint into diffusers and transformers modules, offline.

Key conversion uses diffusers' own LDM→diffusers converters; configs come from ``configs/<family>``
with the architecture read from the tensors (``architecture.py``) and an optional ``name.yaml``.
Modules are created without allocating random weights and take the checkpoint's tensors directly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from modules.core.models.architecture import infer_clip_text_config, infer_unet_config, infer_vae_config
from modules.core.models.family import Detected, detect_family
from modules.core.models.ldm_config import LdmOverrides
from modules.core.sampling.noise_schedule import training_alphas_cumprod
from modules.core.tokenizer import load_clip_tokenizer, tokenizer_file

log = logging.getLogger("hanga")

SUPPORTED_FAMILIES = ("sd1",)
_CLIP_PREFIX = "cond_stage_model.transformer."
_LEGACY_CLIP_PARTS = ("embeddings.", "encoder.", "final_layer_norm.")


class UnsupportedModelError(ValueError):
    pass


@dataclass
class StableDiffusionModel:
    family: Detected
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    prediction_type: str  # "epsilon" | "v_prediction"
    alphas_cumprod: torch.Tensor  # float32, CPU, one value per training timestep
    latent_scale_factor: float
    latent_channels: int
    vae_downscale: int

    def modules(self) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
        return self.unet, self.text_encoder, self.vae


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def normalize_keys(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A1111's key fix-ups: old SD1 text-encoder names gain ``text_model.``."""
    fixed = {}
    for key, value in sd.items():
        if key.startswith(_CLIP_PREFIX) and key[len(_CLIP_PREFIX) :].startswith(_LEGACY_CLIP_PARTS):
            key = _CLIP_PREFIX + "text_model." + key[len(_CLIP_PREFIX) :]
        fixed[key] = value
    return fixed


def _without_ema(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Inference uses the regular weights (A1111's configs set use_ema: False).
    return {k: v for k, v in sd.items() if not k.startswith("model_ema.")}


def _assign(module: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    expected = set(module.state_dict().keys())
    missing = sorted(expected - weights.keys())
    if missing:
        raise ValueError(f"the {what} is incomplete: {len(missing)} tensors missing (first: {missing[0]})")
    unused = sorted(weights.keys() - expected)
    if unused:
        log.debug("%s: ignoring %d unexpected tensors (first: %s)", what, len(unused), unused[0])
    module.load_state_dict({k: weights[k] for k in expected}, strict=True, assign=True)
    module.eval().requires_grad_(False)


def _build_unet(sd: dict, standard: dict, overrides: LdmOverrides) -> UNet2DConditionModel:
    config = infer_unet_config(sd, standard)
    if overrides.unet_num_heads:
        config["attention_head_dim"] = overrides.unet_num_heads
    elif overrides.unet_head_channels:
        config["attention_head_dim"] = [w // overrides.unet_head_channels for w in config["block_out_channels"]]
    if overrides.upcast_attention is not None:
        config["upcast_attention"] = overrides.upcast_attention
    weights = convert_ldm_unet_checkpoint(sd, config)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
    _assign(unet, weights, "U-Net")
    return unet


def _build_vae(sd: dict, standard: dict, scale_factor: float) -> AutoencoderKL:
    config = infer_vae_config(sd, standard)
    config["scaling_factor"] = scale_factor
    weights = convert_ldm_vae_checkpoint(sd, config)
    with init_empty_weights():
        vae = AutoencoderKL.from_config(config)
    _assign(vae, weights, "VAE")
    return vae


def _build_clip_text(sd: dict, standard: dict) -> CLIPTextModel:
    prefix = _CLIP_PREFIX + "text_model."
    config = CLIPTextConfig(**infer_clip_text_config(sd, standard, prefix))
    # transformers 5's CLIPTextModel has no ``text_model`` level: its keys start at ``embeddings.``.
    weights = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    with init_empty_weights():
        model = CLIPTextModel(config)
    _assign(model, weights, "text encoder")
    return model


def load_components(sd: Mapping[str, torch.Tensor], configs: Path, overrides: LdmOverrides | None = None) -> StableDiffusionModel:
    """Build a model from an already loaded (trusted-format) state dict."""
    overrides = overrides or LdmOverrides()
    sd = _without_ema(normalize_keys(sd))
    detected = detect_family(sd)
    if detected.family not in SUPPORTED_FAMILIES:
        raise UnsupportedModelError(f"{detected.label} checkpoints are not supported yet (only Stable Diffusion 1.x)")
    family_dir = configs / detected.family
    info = _read_json(family_dir / "model.json")
    schedule = _read_json(family_dir / "scheduler" / "scheduler_config.json")
    scale = overrides.latent_scale_factor or info["latent_scale_factor"]
    unet = _build_unet(sd, _read_json(family_dir / "unet" / "config.json"), overrides)
    vae = _build_vae(sd, _read_json(family_dir / "vae" / "config.json"), scale)
    text_encoder = _build_clip_text(sd, _read_json(family_dir / "text_encoder" / "config.json"))
    alphas = training_alphas_cumprod(
        beta_start=overrides.beta_start or schedule["beta_start"],
        beta_end=overrides.beta_end or schedule["beta_end"],
        steps=overrides.num_train_timesteps or schedule["num_train_timesteps"],
    )
    return StableDiffusionModel(
        family=detected,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_clip_tokenizer(tokenizer_file(configs, info["tokenizer"])),
        prediction_type=overrides.prediction_type or schedule.get("prediction_type", "epsilon"),
        alphas_cumprod=alphas,
        latent_scale_factor=float(scale),
        latent_channels=int(vae.config.latent_channels),
        vae_downscale=2 ** (len(vae.config.block_out_channels) - 1),
    )
