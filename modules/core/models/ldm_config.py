"""An LDM/CompVis ``name.yaml`` placed beside a checkpoint overrides what the tensors cannot tell.

Only values that are not visible in the weights are read from it: attention head layout,
parameterization (eps / v), the training noise schedule, the latent scale factor, and attention
upcasting. Everything else still comes from the tensors, so a yaml that disagrees with the weights
cannot produce a model that silently ignores some of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class LdmOverrides:
    prediction_type: str | None = None  # "epsilon" | "v_prediction"
    beta_start: float | None = None
    beta_end: float | None = None
    num_train_timesteps: int | None = None
    latent_scale_factor: float | None = None
    unet_num_heads: int | None = None
    unet_head_channels: int | None = None
    upcast_attention: bool | None = None


def _dig(mapping: dict, *keys: str) -> dict:
    for key in keys:
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if not isinstance(value, dict):
            return {}
        mapping = value
    return mapping


def read_ldm_yaml(path: Path) -> LdmOverrides:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path.name}: cannot read model config: {error}") from error
    params = _dig(document, "model", "params")
    unet = _dig(params, "unet_config", "params")
    heads = unet.get("num_heads")
    head_channels = unet.get("num_head_channels")
    parameterization = params.get("parameterization")
    return LdmOverrides(
        prediction_type={"v": "v_prediction", "eps": "epsilon"}.get(parameterization),
        beta_start=_float(params.get("linear_start")),
        beta_end=_float(params.get("linear_end")),
        num_train_timesteps=_int(params.get("timesteps")),
        latent_scale_factor=_float(params.get("scale_factor")),
        unet_num_heads=heads if isinstance(heads, int) and heads > 0 else None,
        unet_head_channels=head_channels if isinstance(head_channels, int) and head_channels > 0 else None,
        upcast_attention=bool(unet["upcast_attention"]) if "upcast_attention" in unet else None,
    )


def _float(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def yaml_beside(checkpoint: Path) -> Path | None:
    candidate = checkpoint.with_suffix(".yaml")
    return candidate if candidate.is_file() else None
