"""External VAE files (A1111's ``sd_vae``): which files are candidates, which one a checkpoint gets
(§6.2's resolution order), and swapping their weights into a loaded model's VAE and back.

A VAE file holds an LDM autoencoder's state dict (``encoder.*``, ``decoder.*``, ``quant_conv.*``,
``post_quant_conv.*``, sometimes ``loss.*`` and EMA bookkeeping); diffusers-layout VAE files
(``encoder.down_blocks.*``) are read as they are.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

log = logging.getLogger("hanga")

VAE_SUFFIXES = (".ckpt", ".pt", ".safetensors")
AUTOMATIC, NONE = "Automatic", "None"


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def discover_vaes(checkpoint_dirs: Iterable[Path], vae_dirs: Iterable[Path], extra_dirs: Iterable[Path] = ()) -> dict[str, Path]:
    """Basename → file: ``*.vae.{ckpt,pt,safetensors}`` beside checkpoints, every model file in the
    VAE folders, and every file of ``--vae-dir`` (A1111's candidates; a later folder wins a name)."""
    found: list[tuple[str, Path]] = []

    def add(folder: Path, wanted) -> None:
        if folder.is_dir():
            found.extend((path.name, path) for path in sorted(folder.rglob("*")) if path.is_file() and wanted(path.name.lower()))

    for folder in checkpoint_dirs:
        add(folder, lambda name: any(name.endswith(".vae" + suffix) for suffix in VAE_SUFFIXES))
    for folder in vae_dirs:
        add(folder, lambda name: name.endswith(VAE_SUFFIXES))
    for folder in extra_dirs:
        add(folder, lambda name: True)
    return dict(sorted(found, key=lambda item: _natural_key(item[0])))


@dataclass(frozen=True)
class VaeChoice:
    path: Path | None  # None: the checkpoint's own (baked-in) VAE
    source: str  # why, as A1111 logs it

    @property
    def name(self) -> str | None:
        return self.path.name if self.path else None


def user_metadata_vae(checkpoint: Path) -> str | None:
    """The ``vae`` key of the checkpoint's user metadata (``<checkpoint stem>.json`` beside it)."""
    metadata = checkpoint.with_suffix(".json")
    try:
        value = json.loads(metadata.read_text(encoding="utf-8")).get("vae")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def resolve_vae(checkpoint: Path, vaes: Mapping[str, Path], setting: str = AUTOMATIC, vae_path: Path | None = None,
                setting_overrides_per_model: bool = True, selected_beats_near: bool = True) -> VaeChoice:
    """A1111's ``resolve_vae``: --vae-path; then the setting when it is not Automatic (and overrides
    per-model preferences, ``sd_vae_overrides_per_model_preferences``); then the checkpoint's user
    metadata; then a VAE whose name starts with the checkpoint's name (only while the setting is
    Automatic, unless ``selected_beats_near``, A1111's ``sd_vae_as_default``, is off); then the
    setting; else the baked-in VAE."""
    if vae_path is not None:
        return VaeChoice(vae_path, "from commandline argument")
    if setting_overrides_per_model and setting != AUTOMATIC:
        return _from_setting(vaes, setting)
    preferred = user_metadata_vae(checkpoint)
    if preferred is not None and preferred != AUTOMATIC:
        if preferred == NONE:
            return VaeChoice(None, "from user metadata")
        if preferred in vaes:
            return VaeChoice(vaes[preferred], "from user metadata")
    stem = checkpoint.name.rsplit(".", 1)[0]
    near = next((path for path in vaes.values() if path.name.startswith(stem)), None)
    if near is not None and (not selected_beats_near or setting == AUTOMATIC):
        return VaeChoice(near, "found near the checkpoint")
    return _from_setting(vaes, setting)


def _from_setting(vaes: Mapping[str, Path], setting: str) -> VaeChoice:
    if setting in vaes:
        return VaeChoice(vaes[setting], "specified in settings")
    if setting not in (AUTOMATIC, NONE):
        log.warning("Couldn't find VAE named %s; using the checkpoint's own VAE instead", setting)
    return VaeChoice(None, "the checkpoint's own")


def vae_weights(state_dict: Mapping[str, torch.Tensor], vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """A VAE file's tensors in the diffusers layout of ``vae``; training leftovers are dropped."""
    kept = {key: value for key, value in state_dict.items()
            if not key.startswith("loss") and key not in ("model_ema.decay", "model_ema.num_updates")}
    kept = {key[len("first_stage_model."):] if key.startswith("first_stage_model.") else key: value
            for key, value in kept.items()}
    if any(key.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for key in kept):
        converted = kept
    else:
        converted = convert_ldm_vae_checkpoint({f"first_stage_model.{k}": v for k, v in kept.items()}, dict(vae.config))
    expected = vae.state_dict()
    missing = sorted(expected.keys() - converted.keys())
    if missing:
        raise ValueError(f"not a VAE for this model: {len(missing)} tensors missing (first: {missing[0]})")
    wrong = [key for key in expected if converted[key].shape != expected[key].shape]
    if wrong:
        raise ValueError(f"not a VAE for this model: {wrong[0]} has shape {tuple(converted[wrong[0]].shape)}, "
                         f"expected {tuple(expected[wrong[0]].shape)}")
    return {key: converted[key] for key in expected}


def snapshot(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """A CPU copy of the VAE's weights, to put the baked-in VAE back ("None")."""
    return {key: value.detach().to("cpu", copy=True) for key, value in vae.state_dict().items()}


@torch.no_grad()
def put_weights(vae: AutoencoderKL, weights: Mapping[str, torch.Tensor]) -> None:
    """Copy ``weights`` into the VAE in place: its parameters keep their device and dtype."""
    vae.load_state_dict(dict(weights), strict=True)
