"""Pasting an infotext: generation fields for the UI, and "override settings" for the keys that
belong to settings (Clip skip, ENSD, RNG, Eta …), as A1111's paste does (§3.5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from modules.core.generation.request import MASKED_CONTENT
from modules.core.infotext import parse_infotext
from modules.core.sampling.samplers import UnknownSamplerError, effective_scheduler, resolve_sampler
from modules.service.settings import Settings, SettingsView
from modules.service.settings_schema import InvalidSetting, Setting

# Infotext key → request field, with the type the field holds.
FIELDS: tuple[tuple[str, str, type], ...] = (
    ("Prompt", "prompt", str),
    ("Negative prompt", "negative_prompt", str),
    ("Steps", "steps", int),
    ("CFG scale", "cfg_scale", float),
    ("Seed", "seed", int),
    ("Size-1", "width", int),
    ("Size-2", "height", int),
    ("Variation seed", "subseed", int),
    ("Variation seed strength", "subseed_strength", float),
    ("Seed resize from-1", "seed_resize_from_w", int),
    ("Seed resize from-2", "seed_resize_from_h", int),
    ("Denoising strength", "denoising_strength", float),
    ("Hires upscale", "hr_scale", float),
    ("Hires resize-1", "hr_resize_x", int),
    ("Hires resize-2", "hr_resize_y", int),
    ("Hires steps", "hr_second_pass_steps", int),
    ("Hires upscaler", "hr_upscaler", str),
    ("Hires prompt", "hr_prompt", str),
    ("Hires negative prompt", "hr_negative_prompt", str),
    ("Mask blur", "mask_blur", int),
    ("Masked area padding", "inpaint_full_res_padding", int),
    ("Noise multiplier", "initial_noise_multiplier", float),
    ("Refiner", "refiner_checkpoint", str),
    ("Refiner switch at", "refiner_switch_at", float),
)
HIRES_KEYS = ("Hires upscale", "Hires upscaler", "Hires resize-1")
# Settings whose infotext key is not pasted as an override (switching models needs a click).
NOT_OVERRIDDEN = {"sd_model_checkpoint"}


@dataclass
class Pasted:
    fields: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)  # "Clip skip: 2" entries, A1111's format


def _cast(kind: type, value: Any) -> Any:
    if kind is str:
        return str(value)
    number = float(value)
    return int(number) if kind is int else (int(number) if number.is_integer() else number)


def _setting_value(setting: Setting, value: Any) -> Any:
    kind = type(setting.default)
    if kind is bool:
        return str(value).lower() == "true"
    if kind in (int, float):
        return setting.validate(kind(float(value)))
    return setting.validate(str(value))


def paste(text: str, settings: Settings, on_params: Callable[[str, dict], Any] | None = None) -> Pasted:
    """``on_params(text, params)`` may change the parsed parameters first (A1111's
    ``on_infotext_pasted`` callbacks)."""
    params = parse_infotext(text, backcompat=settings.get("auto_backcompat"))
    if on_params is not None:
        on_params(text, params)
    pasted = Pasted()
    for key, name, kind in FIELDS:
        if key in params:
            try:
                pasted.fields[name] = _cast(kind, params[key])
            except (TypeError, ValueError):
                continue
    _paste_sampler(params, pasted)
    _paste_hires_and_inpaint(params, pasted)
    for setting in settings.schema.values():
        if not setting.infotext or setting.key in NOT_OVERRIDDEN or setting.infotext not in params:
            continue
        try:
            value = _setting_value(setting, params[setting.infotext])
        except (InvalidSetting, TypeError, ValueError):
            continue
        if value != settings.get(setting.key):
            pasted.overrides.append(f"{setting.infotext}: {params[setting.infotext]}")
    return pasted


def _paste_sampler(params: dict, pasted: Pasted) -> None:
    if "Sampler" not in params:
        return
    try:
        sampler, scheduler = resolve_sampler(str(params["Sampler"]), str(params.get("Schedule type", "Automatic")))
    except UnknownSamplerError:
        return
    # A schedule that is the sampler's own default is shown as "Automatic" (A1111's paste).
    default = effective_scheduler(sampler, resolve_sampler(sampler.name, "Automatic")[1])
    pasted.fields["sampler_name"] = sampler.name
    pasted.fields["scheduler"] = "Automatic" if scheduler.name == default.name else scheduler.label


def _paste_hires_and_inpaint(params: dict, pasted: Pasted) -> None:
    """A1111's paste fields that are not plain casts: hires is on when a denoising strength comes
    with a hires key; "Use same …" choices are the empty field; inpaint radios from their labels."""
    if "Denoising strength" in params:
        pasted.fields["enable_hr"] = any(key in params for key in HIRES_KEYS)
    for key, name in (("Hires sampler", "hr_sampler_name"), ("Hires schedule type", "hr_scheduler"),
                      ("Hires checkpoint", "hr_checkpoint_name")):
        value = str(params.get(key, ""))
        if key in params:
            pasted.fields[name] = "" if value.startswith("Use same") else value
    if "Mask mode" in params:
        pasted.fields["inpainting_mask_invert"] = int(params["Mask mode"] == "Inpaint not masked")
    if "Masked content" in params and params["Masked content"] in MASKED_CONTENT:
        pasted.fields["inpainting_fill"] = MASKED_CONTENT.index(params["Masked content"])
    if "Inpaint area" in params:
        pasted.fields["inpaint_full_res"] = params["Inpaint area"] == "Only masked"


def overrides_from_entries(entries: list[str], settings: Settings | SettingsView) -> dict[str, Any]:
    """``["Clip skip: 2"]`` → ``{"CLIP_stop_at_last_layers": 2}``; unknown entries are errors."""
    base = settings if isinstance(settings, Settings) else settings.base
    by_infotext = {s.infotext: s for s in base.schema.values() if s.infotext}
    result = {}
    for entry in entries or []:
        key, _, value = entry.partition(":")
        setting = by_infotext.get(key.strip())
        if setting is None:
            raise InvalidSetting("override_settings", f"unknown override {entry!r}")
        try:
            result[setting.key] = _setting_value(setting, value.strip())
        except (TypeError, ValueError) as error:
            raise InvalidSetting(setting.key, f"cannot use {value.strip()!r} ({error})") from None
    return result
