"""A1111 facade: ``modules.processing`` — ``process_images``, ``Processed`` and the processing
classes (``isinstance(p, StableDiffusionProcessingImg2Img)`` works on Hanga's ``p``)."""

from __future__ import annotations

import random

from modules.service.extensions import context
from modules.service.processing import Processed, Processing, process_images  # noqa: F401 - A1111's names

__all__ = ["Processed", "process_images", "fix_seed", "StableDiffusionProcessing",
           "StableDiffusionProcessingTxt2Img", "StableDiffusionProcessingImg2Img"]


class _Kind(type):
    def __instancecheck__(cls, instance) -> bool:
        wanted = cls.__dict__.get("_img2img")
        return isinstance(instance, Processing) and (wanted is None or instance.is_img2img == wanted)


class StableDiffusionProcessing(metaclass=_Kind):
    """``StableDiffusionProcessingTxt2Img(prompt=…, steps=…)`` / ``…Img2Img(init_images=[…], …)``
    build a ``p`` for ``process_images`` with A1111's keyword names (the running Hanga's)."""

    _img2img = None

    def __new__(cls, *args, **kwargs):
        if cls._img2img is None:
            raise TypeError("build a StableDiffusionProcessingTxt2Img or StableDiffusionProcessingImg2Img")
        if args:
            raise TypeError(f"{cls.__name__} takes keyword arguments only (A1111's names)")
        service = context.current().service
        if service is None:
            raise RuntimeError(f"{cls.__name__} needs the running Hanga (build it from a script's hook or callback)")
        return service.new_processing(cls._img2img, kwargs)


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    _img2img = False


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    _img2img = True


def _fixed(seed) -> int:
    if seed is None or seed == "" or int(seed) == -1:
        return int(random.randrange(4294967294))
    return int(seed)


def fix_seed(p) -> None:
    """A random seed (and variation seed) chosen now, in place of -1."""
    p.seed = _fixed(p.seed)
    p.subseed = _fixed(p.subseed)
