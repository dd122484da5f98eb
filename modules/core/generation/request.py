"""Generation requests: typed fields with A1111's names, declared once with their allowed ranges.

Both the UI and the HTTP API build a ``Txt2ImgRequest``; ``validate()`` raises ``InvalidRequest``
naming the field and its allowed range, so bad input never reaches the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from modules.core.sampling.samplers import UnknownSamplerError, resolve_sampler

MAX_SEED = 2**63 - 1


class InvalidRequest(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    multiple_of: int = 1

    def check(self, field: str, value) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidRequest(field, f"must be a number between {self.low:g} and {self.high:g}; got {value!r}")
        if not self.low <= value <= self.high:
            raise InvalidRequest(field, f"must be between {self.low:g} and {self.high:g}; got {value:g}")
        if self.multiple_of > 1 and value % self.multiple_of:
            raise InvalidRequest(field, f"must be a multiple of {self.multiple_of}; got {value:g}")


RANGES: dict[str, Range] = {
    "steps": Range(1, 500),
    "cfg_scale": Range(0, 100),
    "width": Range(64, 8192, 8),
    "height": Range(64, 8192, 8),
    "batch_size": Range(1, 64),
    "n_iter": Range(1, 1000),
    "seed": Range(-1, MAX_SEED),
    "subseed": Range(-1, MAX_SEED),
    "subseed_strength": Range(0, 1),
    "seed_resize_from_w": Range(-1, 8192),
    "seed_resize_from_h": Range(-1, 8192),
}
INTEGER_FIELDS = {"steps", "width", "height", "batch_size", "n_iter", "seed", "subseed", "seed_resize_from_w", "seed_resize_from_h"}


@dataclass(frozen=True)
class Txt2ImgRequest:
    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = 0
    seed_resize_from_h: int = 0
    batch_size: int = 1
    n_iter: int = 1
    eta: float | None = None

    def validate(self) -> "Txt2ImgRequest":
        """Check every field; return a copy with numbers normalised (7.0 → 7 for whole floats)."""
        for name in ("prompt", "negative_prompt"):
            if not isinstance(getattr(self, name), str):
                raise InvalidRequest(name, "must be text")
        normalized = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in RANGES:
                value = _integral(f.name, value) if f.name in INTEGER_FIELDS else value
                RANGES[f.name].check(f.name, value)
                normalized[f.name] = value
        if self.eta is not None:
            Range(0, 10).check("eta", self.eta)
        try:
            resolve_sampler(self.sampler_name, self.scheduler)
        except UnknownSamplerError as error:
            field = "scheduler" if "scheduler" in str(error) else "sampler_name"
            raise InvalidRequest(field, str(error)) from None
        normalized["cfg_scale"] = _whole_float_as_int(self.cfg_scale)
        return replace(self, **normalized)


def _integral(field: str, value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(field, f"must be a whole number; got {value!r}")
    return value


def _whole_float_as_int(value: float) -> float | int:
    """A1111's UI sends 7 for a CFG slider at 7; the API sends 7.0. Normalising keeps the infotext
    of one request the same whichever way it came in."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
