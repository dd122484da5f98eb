"""Load an A1111/original single-file checkpoint into diffusers and transformers modules, offline.

Families: SD1.x, SD2.x (eps and v-prediction), SDXL base and refiner, each with its inpainting
variant (9-channel U-Net). U-Net and VAE keys go through diffusers' own LDM→diffusers converters;
text encoders through ``text_encoders.py``. Configs come from ``configs/<family>`` with the
architecture read from the tensors (``architecture.py``) and an optional ``name.yaml``. Modules are
created without allocating random weights and take the checkpoint's tensors directly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from modules.core.models.architecture import infer_clip_text_config, infer_unet_config, infer_vae_config
from modules.core.models.family import Detected, detect_family
from modules.core.conditioning.cond import SdxlConditioning
from modules.core.devices import DevicePolicy
from modules.core.models.ldm_config import LdmOverrides
from modules.core.models.text_encoders import build_openclip_text
from modules.core.models.weights import assign_weights
from modules.core.sampling.noise_schedule import training_alphas_cumprod
from modules.core.tokenizer import load_clip_tokenizer, tokenizer_file

log = logging.getLogger("hanga")

SUPPORTED_FAMILIES = ("sd1", "sd2", "sdxl", "sdxl-refiner")
_CLIP_PREFIX = "cond_stage_model.transformer."
_OPENCLIP_PREFIX = "cond_stage_model.model."
_SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
_SDXL_BIGG_PREFIX = "conditioner.embedders.1.model."
_REFINER_BIGG_PREFIX = "conditioner.embedders.0.model."
_UNET_PREFIX = "model.diffusion_model."
_LEGACY_CLIP_PARTS = ("embeddings.", "encoder.", "final_layer_norm.")


class UnsupportedModelError(ValueError):
    pass


@dataclass
class StableDiffusionModel:
    family: Detected
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel | CLIPTextModelWithProjection  # SDXL: CLIP-L; refiner: bigG
    tokenizer: CLIPTokenizer
    prediction_type: str  # "epsilon" | "v_prediction"
    alphas_cumprod: torch.Tensor  # float32, CPU, one value per training timestep
    latent_scale_factor: float
    latent_channels: int
    vae_downscale: int
    text_encoder_2: CLIPTextModelWithProjection | None = None  # SDXL base: OpenCLIP bigG
    sdxl: SdxlConditioning | None = None  # SDXL base and refiner: pooled vector and size ids
    unet_ldm_names: dict[str, str] = field(default_factory=dict)  # U-Net module path → its checkpoint name
    # Where generation runs. Components may wait elsewhere between uses (--medvram, --lowvram):
    # tensors a job makes (noise, latents, tokens) go here, not to wherever a component sits.
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # The jobs' LoRA mergers whose LoRAs are in this model's weights, outermost first: a job run from
    # inside another job's hooks takes the outer job's LoRAs out and puts them back when it ends.
    lora_mergers: list = field(default_factory=list, repr=False, compare=False)

    def text_encoders(self) -> list[torch.nn.Module]:
        return [self.text_encoder] + ([self.text_encoder_2] if self.text_encoder_2 is not None else [])

    def modules(self) -> tuple[torch.nn.Module, ...]:
        """U-Net, first text encoder, VAE, then any further text encoder."""
        return (self.unet, self.text_encoder, self.vae, *self.text_encoders()[1:])

    @property
    def text_width(self) -> int:
        """The width of the text conditioning (768 SD1, 1024 SD2, 2048 SDXL, 1280 refiner): the
        width a textual-inversion embedding must have."""
        return sum(int(encoder.config.hidden_size) for encoder in self.text_encoders())


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def normalize_keys(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A1111's key fix-ups: old SD1 text-encoder names gain ``text_model.``; SD2.1 Turbo's SGM
    names (``conditioner.embedders.0.model.`` without SDXL's size embedding) become SD2's."""
    sd2_sgm = _REFINER_BIGG_PREFIX + "ln_final.weight" in sd and "model.diffusion_model.label_emb.0.0.weight" not in sd
    fixed = {}
    for key, value in sd.items():
        if key.startswith(_CLIP_PREFIX) and key[len(_CLIP_PREFIX) :].startswith(_LEGACY_CLIP_PARTS):
            key = _CLIP_PREFIX + "text_model." + key[len(_CLIP_PREFIX) :]
        elif sd2_sgm and key.startswith("conditioner.embedders.0."):
            key = "cond_stage_model." + key[len("conditioner.embedders.0."):]
        fixed[key] = value
    return fixed


def _without_ema(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Inference uses the regular weights (A1111's configs set use_ema: False).
    return {k: v for k, v in sd.items() if not k.startswith("model_ema.")}


def _unet_config(sd: dict, standard: dict, overrides: LdmOverrides) -> dict:
    config = infer_unet_config(sd, standard)
    if overrides.unet_num_heads:
        config["attention_head_dim"] = overrides.unet_num_heads
    elif overrides.unet_head_channels:
        config["attention_head_dim"] = [w // overrides.unet_head_channels for w in config["block_out_channels"]]
    if overrides.upcast_attention is not None:
        config["upcast_attention"] = overrides.upcast_attention
    return config


def _build_unet(sd: dict, config: dict, placement: tuple = (None, None)) -> tuple[UNet2DConditionModel, dict[str, str]]:
    """The U-Net, and each of its weighted modules' original (LDM) name: the converter moves the
    very tensor objects, so identity tells which checkpoint key became which parameter."""
    weights = convert_ldm_unet_checkpoint(sd, config)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
    assign_weights(unet, weights, "U-Net", *placement)
    original = {id(tensor): key for key, tensor in sd.items() if key.startswith(_UNET_PREFIX)}
    names = {}
    for key, tensor in weights.items():
        source = original.get(id(tensor))
        if source is not None and key.endswith(".weight") and source.endswith(".weight"):
            names[key[: -len(".weight")]] = source[len(_UNET_PREFIX): -len(".weight")]
    return unet, names


def _build_vae(sd: dict, standard: dict, scale_factor: float, placement: tuple = (None, None)) -> AutoencoderKL:
    config = infer_vae_config(sd, standard)
    config["scaling_factor"] = scale_factor
    weights = convert_ldm_vae_checkpoint(sd, config)
    with init_empty_weights():
        vae = AutoencoderKL.from_config(config)
    assign_weights(vae, weights, "VAE", *placement)
    return vae


def _build_clip_text(sd: dict, standard: dict, prefix: str = _CLIP_PREFIX + "text_model.",
                     placement: tuple = (None, None)) -> CLIPTextModel:
    config = CLIPTextConfig(**infer_clip_text_config(sd, standard, prefix))
    # transformers 5's CLIPTextModel has no ``text_model`` level: its keys start at ``embeddings.``.
    weights = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    with init_empty_weights():
        model = CLIPTextModel(config)
    assign_weights(model, weights, "text encoder", *placement)
    return model


@torch.no_grad()
def is_v_prediction_sd2(unet: UNet2DConditionModel) -> bool:
    """A1111's test for SD2 768-v checkpoints (§6.1): at t=999 on a flat 0.5 latent with flat
    0.5 conditioning, a v-model's output sits far below its input (mean(out − x) < −1)."""
    device, dtype = unet.device, unet.dtype
    x = torch.full((1, 4, 8, 8), 0.5, device=device, dtype=dtype)
    context = torch.full((1, 2, int(unet.config.cross_attention_dim)), 0.5, device=device, dtype=dtype)
    out = unet(x, torch.tensor([999.0], device=device), encoder_hidden_states=context, return_dict=False)[0]
    return float((out.float() - x.float()).mean()) < -1.0


def _text_encoders(sd: dict, family: str, family_dir: Path, placement: tuple):
    """The family's text encoder(s): (first, second or None)."""
    if family == "sd1":
        return _build_clip_text(sd, _read_json(family_dir / "text_encoder" / "config.json"), placement=placement), None
    if family == "sd2":
        standard = _read_json(family_dir / "text_encoder" / "config.json")
        return build_openclip_text(sd, standard, _OPENCLIP_PREFIX, drop_last_layer=True, placement=placement), None
    bigg = _read_json(family_dir / "text_encoder_2" / "config.json")
    if family == "sdxl":
        clip_l = _build_clip_text(sd, _read_json(family_dir / "text_encoder" / "config.json"), _SDXL_CLIP_PREFIX, placement)
        return clip_l, build_openclip_text(sd, bigg, _SDXL_BIGG_PREFIX, with_projection=True, placement=placement)
    return build_openclip_text(sd, bigg, _REFINER_BIGG_PREFIX, with_projection=True, placement=placement), None


def _sdxl_time_embedding(config: dict, pooled_width: int, size_ids: int) -> None:
    """The width of each size id's sinusoidal embedding, from the embedding's input width."""
    total = int(config["projection_class_embeddings_input_dim"])
    if (total - pooled_width) % size_ids or total <= pooled_width:
        raise ValueError(f"the U-Net's size embedding takes {total} values, which does not fit a "
                         f"{pooled_width}-wide pooled text vector and {size_ids} size ids")
    config["addition_time_embed_dim"] = (total - pooled_width) // size_ids


def load_components(sd: Mapping[str, torch.Tensor], configs: Path, overrides: LdmOverrides | None = None,
                    policy: DevicePolicy | None = None) -> StableDiffusionModel:
    """Build a model from an already loaded (trusted-format) state dict. With a ``policy`` each
    component is created on its device in its dtype (no full-precision copy on the way); without,
    the tensors are taken as the file has them."""
    def placement(dtype_name: str) -> tuple:
        return (None, None) if policy is None else (policy.device, getattr(policy, dtype_name))

    overrides = overrides or LdmOverrides()
    sd = _without_ema(normalize_keys(sd))
    detected = detect_family(sd)
    if detected.family not in SUPPORTED_FAMILIES:
        raise UnsupportedModelError(
            f"{detected.label} checkpoints are not supported (supported: SD1.x, SD2.x, SDXL and the SDXL refiner)"
        )
    family = detected.family
    family_dir = configs / family
    info = _read_json(family_dir / "model.json")
    schedule = _read_json(family_dir / "scheduler" / "scheduler_config.json")
    scale = overrides.latent_scale_factor or info["latent_scale_factor"]
    text_encoder, text_encoder_2 = _text_encoders(sd, family, family_dir, placement("text_encoder_dtype"))
    unet_config = _unet_config(sd, _read_json(family_dir / "unet" / "config.json"), overrides)
    pooled = int((text_encoder_2 or text_encoder).config.projection_dim) if "size_ids" in info else None
    if pooled is not None:  # SDXL base and refiner
        _sdxl_time_embedding(unet_config, pooled, int(info["size_ids"]))
    unet, unet_ldm_names = _build_unet(sd, unet_config, placement("unet_dtype"))
    vae = _build_vae(sd, _read_json(family_dir / "vae" / "config.json"), scale, placement("vae_dtype"))
    downscale = 2 ** (len(vae.config.block_out_channels) - 1)
    sdxl = None if pooled is None else SdxlConditioning(family == "sdxl-refiner", pooled, downscale)
    prediction = overrides.prediction_type or schedule.get("prediction_type", "epsilon")
    if family == "sd2" and overrides.prediction_type is None and detected.variant is None and is_v_prediction_sd2(unet):
        prediction = "v_prediction"
        detected = Detected(detected.family, detected.label, "v-prediction")
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
        prediction_type=prediction,
        alphas_cumprod=alphas,
        latent_scale_factor=float(scale),
        latent_channels=int(vae.config.latent_channels),
        vae_downscale=downscale,
        text_encoder_2=text_encoder_2,
        sdxl=sdxl,
        unet_ldm_names=unet_ldm_names,
        device=policy.device if policy is not None else torch.device("cpu"),
    )
