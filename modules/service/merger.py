"""The Checkpoint Merger tab's action: load A/B/C, merge (``core/models/merge.py``), save the result
into the checkpoint folder atomically, refresh the list. Names, metadata and the config copy follow
A1111 v1.10.1's ``run_modelmerger``."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from modules.core.atomic import atomic_open, atomic_path
from modules.core.checkpoints import CheckpointInfo
from modules.core.generation.request import InvalidRequest
from modules.core.hashing import old_hash
from modules.core.models.merge import (ADD_DIFFERENCE, METHODS, WEIGHTED_SUM, MergeError, merge_state_dicts,
                                       needs_secondary, needs_tertiary)
from modules.core.safe_load import CorruptFileError, UnsafeFileError, load_state_dict, safetensors_metadata
from modules.service.models import ModelService

log = logging.getLogger("hanga")

FORMATS = ("safetensors", "ckpt")
CONFIG_SOURCES = ("A, B or C", "B", "C", "Don't")
_FIELDS = {"primary": "primary_model_name", "secondary": "secondary_model_name",
           "tertiary": "tertiary_model_name", "vae": "bake_in_vae"}


def _checkpoint(models: ModelService, name: str | None, field: str, role: str) -> CheckpointInfo:
    if not name:
        raise InvalidRequest(field, f"Merging requires a {role} model.")
    info = models.find(name)
    if info is None:
        raise InvalidRequest(field, f"checkpoint {name!r} not found")
    return info


def _load(models: ModelService, path: Path, field: str) -> dict[str, torch.Tensor]:
    try:
        return load_state_dict(path, allow_unsafe=models.allow_unsafe)
    except (UnsafeFileError, CorruptFileError) as error:
        raise InvalidRequest(field, str(error)) from error


def _config_index(config_source: int | str) -> int:
    if isinstance(config_source, int) and not isinstance(config_source, bool) and 0 <= config_source < len(CONFIG_SOURCES):
        return config_source
    if config_source in CONFIG_SOURCES:
        return CONFIG_SOURCES.index(config_source)
    raise InvalidRequest("config_source", f"must be one of {', '.join(CONFIG_SOURCES)}; got {config_source!r}")


def output_name(method: str, multiplier: float, a: CheckpointInfo, b: CheckpointInfo | None,
                c: CheckpointInfo | None, custom_name: str) -> str:
    """A1111's file name without extension: ``0.7(a) + 0.3(b)``, ``a + 0.3(b - c)`` or ``a``."""
    if custom_name:
        return custom_name
    if method == WEIGHTED_SUM:
        return f"{round(1 - multiplier, 2)}({a.model_name}) + {round(multiplier, 2)}({b.model_name})"
    if method == ADD_DIFFERENCE:
        return f"{a.model_name} + {round(multiplier, 2)}({b.model_name} - {c.model_name})"
    return a.model_name


def _parse_metadata_json(text: str | None) -> dict[str, str]:
    if not text or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as error:
        raise InvalidRequest("metadata_json", f"not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise InvalidRequest("metadata_json", "must be a JSON object ({\"key\": \"value\", …})")
    # safetensors metadata holds strings only; other values are stored as their JSON text.
    return {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in data.items()}


def _json_or_none(text: str | None):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def read_metadata(models: ModelService, *names: str | None) -> str:
    """"Read metadata from selected checkpoints": the inputs' safetensors metadata as one JSON text
    (later models win; values that hold JSON objects are shown parsed, as A1111 does)."""
    metadata: dict = {}
    for name in names:
        info = models.find(name) if name else None
        if info is not None:
            for key, value in safetensors_metadata(info.path).items():
                parsed = _json_or_none(value) if value.startswith("{") else None
                metadata[key] = parsed if parsed is not None else value
    return json.dumps(metadata, indent=4, ensure_ascii=False)


def _merge_metadata(models: ModelService, inputs: list[CheckpointInfo], recipe: dict) -> dict[str, str]:
    """``sd_merge_recipe`` and ``sd_merge_models`` (each input by sha256, plus the inputs' own history)."""
    merged_models: dict = {}
    for info in inputs:
        hashed = models.hashed(info)
        own = safetensors_metadata(info.path)
        merged_models[hashed.sha256] = {"name": info.name, "legacy_hash": old_hash(info.path),
                                        "sd_merge_recipe": _json_or_none(own.get("sd_merge_recipe"))}
        history = _json_or_none(own.get("sd_merge_models"))
        if isinstance(history, dict):
            merged_models.update(history)
    return {"sd_merge_recipe": json.dumps(recipe), "sd_merge_models": json.dumps(merged_models)}


def _save_safetensors(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None) -> None:
    # safetensors refuses views and tensors that share storage; give it plain, separate tensors.
    seen: set[int] = set()
    plain = {}
    for key, tensor in state_dict.items():
        tensor = tensor.contiguous()
        pointer = tensor.data_ptr()
        plain[key] = tensor.clone() if pointer in seen and tensor.numel() else tensor
        seen.add(pointer)
    with atomic_path(path) as temp:
        save_file(plain, str(temp), metadata=metadata)


def _save_ckpt(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_open(path, "wb") as handle:
        torch.save(state_dict, handle)  # a flat dict, as A1111's merger writes


def _copy_config(output: Path, source: int, inputs: list[CheckpointInfo | None]) -> Path | None:
    a, b, c = inputs
    candidates = {0: [a, b, c], 1: [b], 2: [c]}.get(source, [])
    config = next((info.yaml for info in candidates if info is not None and info.yaml), None)
    if config is None:
        return None
    target = output.with_suffix(".yaml")
    with atomic_open(target, "wb") as handle:
        with open(config, "rb") as src:
            shutil.copyfileobj(src, handle)
    log.info("Copied config %s to %s", config, target)
    return target


def run_merge(models: ModelService, primary: str, secondary: str | None = None, tertiary: str | None = None,
              method: str = WEIGHTED_SUM, multiplier: float = 0.3, custom_name: str = "",
              save_as_half: bool = False, fmt: str = "safetensors", bake_in_vae: str = "None",
              discard_weights: str = "", save_metadata: bool = True, add_merge_recipe: bool = True,
              copy_metadata: bool = True, metadata_json: str = "", config_source: int | str = 0) -> Path:
    """Merge and save; returns the new checkpoint's path. Bad input raises ``InvalidRequest``."""
    if method not in METHODS:
        raise InvalidRequest("interp_method", f"must be one of {', '.join(METHODS)}; got {method!r}")
    if fmt not in FORMATS:
        raise InvalidRequest("checkpoint_format", f"must be safetensors or ckpt; got {fmt!r}")
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
        raise InvalidRequest("multiplier", f"must be a number; got {multiplier!r}")
    custom_name = (custom_name or "").strip()
    if custom_name and (re.search(r"[\\/:*?\"<>|\x00]", custom_name) or custom_name.strip(".") == ""):
        raise InvalidRequest("custom_name", "must be a plain file name (no folders or special characters)")
    try:
        discard = re.compile(discard_weights) if discard_weights else None
    except re.error as error:
        raise InvalidRequest("discard_weights", f"not a valid regular expression ({error})") from error
    config_index = _config_index(config_source)
    user_metadata = _parse_metadata_json(metadata_json) if save_metadata else {}

    a = _checkpoint(models, primary, _FIELDS["primary"], "primary")
    b = _checkpoint(models, secondary, _FIELDS["secondary"], "secondary") if needs_secondary(method) else None
    c = _checkpoint(models, tertiary, _FIELDS["tertiary"], "tertiary") if needs_tertiary(method) else None
    vae_path = None
    if bake_in_vae and bake_in_vae != "None":
        vae_path = models.vaes().get(bake_in_vae)
        if vae_path is None:
            raise InvalidRequest("bake_in_vae", f"VAE {bake_in_vae!r} not found")

    log.info("Merging %s", ", ".join(info.name for info in (a, b, c) if info))
    try:
        result = merge_state_dicts(
            _load(models, a.path, _FIELDS["primary"]),
            _load(models, b.path, _FIELDS["secondary"]) if b else None,
            _load(models, c.path, _FIELDS["tertiary"]) if c else None,
            method, float(multiplier), save_as_half=save_as_half,
            vae=_load(models, vae_path, "bake_in_vae") if vae_path else None,
            discard_weights=discard.pattern if discard else "",
        )
    except MergeError as error:
        raise InvalidRequest(_FIELDS.get(error.role, error.role), str(error)) from error

    name = output_name(method, multiplier, a, b, c, custom_name)
    name += ".inpainting" if result.is_inpainting else ""
    name += ".instruct-pix2pix" if result.is_instruct_pix2pix else ""
    folder = models.paths.extra_checkpoint_dirs[0] if models.paths.extra_checkpoint_dirs else models.paths.checkpoints
    output = folder / f"{name}.{fmt}"

    metadata: dict[str, str] = {}
    if save_metadata:
        if copy_metadata:
            for info in (a, b, c):
                if info is not None:
                    metadata.update(safetensors_metadata(info.path))
        metadata.update(user_metadata)
        metadata["format"] = "pt"
        if add_merge_recipe:
            recipe = {
                "type": "webui", "primary_model_hash": models.hashed(a).sha256,
                "secondary_model_hash": models.hashed(b).sha256 if b else None,
                "tertiary_model_hash": models.hashed(c).sha256 if c else None,
                "interp_method": method, "multiplier": multiplier, "save_as_half": save_as_half,
                "custom_name": custom_name, "config_source": config_index, "bake_in_vae": bake_in_vae,
                "discard_weights": discard_weights, "is_inpainting": result.is_inpainting,
                "is_instruct_pix2pix": result.is_instruct_pix2pix,
            }
            metadata.update(_merge_metadata(models, [info for info in (a, b, c) if info], recipe))

    log.info("Saving merged checkpoint to %s", output)
    if fmt == "safetensors":
        _save_safetensors(result.state_dict, output, metadata or None)
    else:
        _save_ckpt(result.state_dict, output)
    del result
    _copy_config(output, config_index, [a, b, c])

    models.refresh()
    created = next((info for info in models.checkpoints if info.path == output), None)
    if created is not None:
        models.hashed(created)
    return output
