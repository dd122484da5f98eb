"""Upscaler models from ``models/ESRGAN``, ``models/RealESRGAN`` and ``models/SwinIR``, by the
names A1111 shows: an ESRGAN or SwinIR file by its name without extension, the Real-ESRGAN
releases by A1111's fixed names ("R-ESRGAN 4x+" …). Files are read through the restricted loader
and the architecture is decided by the weights (``core/upscalers``). One model is kept loaded;
asking for another lets it go."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from modules.core.devices import MemoryManager
from modules.core.generation.image_ops import ImageUpscaler
from modules.core.generation.image_ops import upscale as builtin_upscale
from modules.core.generation.request import IMAGE_UPSCALERS, InvalidRequest
from modules.core.paths import Paths
from modules.core.safe_load import CorruptFileError, UnsafeFileError, load_state_dict
from modules.core.upscalers import build_upscaler, upscale_image

log = logging.getLogger(__name__)

SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt", ".bin")
# A1111's names for the Real-ESRGAN releases (files in models/RealESRGAN).
REAL_ESRGAN_NAMES = {
    "realesrgan_x4plus": "R-ESRGAN 4x+",
    "realesrgan_x4plus_anime_6b": "R-ESRGAN 4x+ Anime6B",
    "realesr-general-x4v3": "R-ESRGAN General 4xV3",
    "realesr-general-wdn-x4v3": "R-ESRGAN General WDN 4xV3",
    "realesr-animevideov3": "R-ESRGAN AnimeVideo",
    "realesrgan_x2plus": "R-ESRGAN 2x+",
}


class UpscalerError(InvalidRequest):
    """An upscaler file that cannot be used (unsafe, damaged, an unknown architecture)."""


@dataclass(frozen=True)
class UpscalerFile:
    name: str
    path: Path
    kind: str  # the folder family: ESRGAN, RealESRGAN, SwinIR

    @property
    def scale_hint(self) -> int:
        """The scale its name says ("4x-UltraSharp", "RealESRGAN_x2plus"), else 4 (as A1111 lists them)."""
        found = re.search(r"(?<![0-9])([1-8])x|x([1-8])(?![0-9])", self.path.stem.lower())
        return int(found.group(1) or found.group(2)) if found else 4


class UpscalerLibrary:
    def __init__(self, paths: Paths, memory: MemoryManager, settings_get: Callable[[str], object],
                 allow_unsafe: bool = False):
        self.paths, self.memory, self.get, self.allow_unsafe = paths, memory, settings_get, allow_unsafe
        self._lock = threading.RLock()
        self._loaded: tuple[Path, float, torch.nn.Module, int, str] | None = None

    # -- what there is ---------------------------------------------------------------------------
    def files(self) -> dict[str, UpscalerFile]:
        found: dict[str, UpscalerFile] = {}
        for kind, folder in self.paths.upscaler_dirs.items():
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                if path.is_file() and path.suffix.lower() in SUFFIXES and not path.name.startswith("."):
                    name = REAL_ESRGAN_NAMES.get(path.stem.lower(), path.stem) if kind == "RealESRGAN" else path.stem
                    if kind == "SwinIR" and name.lower().startswith("003_realsr_bsrgan_dfo_s64w8_swinir-m_x4"):
                        name = "SwinIR 4x"  # the file A1111 downloads for "SwinIR 4x"
                    found.setdefault(name, UpscalerFile(name, path, kind))
        return found

    def names(self) -> list[str]:
        """Every image upscaler: the built-in ones, then the model files."""
        return [*IMAGE_UPSCALERS, *(name for name in self.files() if name not in IMAGE_UPSCALERS)]

    def check(self, name: str, field: str) -> None:
        if name not in IMAGE_UPSCALERS and name not in self.files():
            raise InvalidRequest(field, f"unknown upscaler {name!r}; available: {', '.join(self.names())}")

    def models(self) -> "UpscalerModels":
        """Name → one pass of that model, loading it only when a job uses it."""
        return UpscalerModels(self)

    # -- using one ---------------------------------------------------------------------------------
    def upscale(self, image: Image.Image, scale: float, name: str) -> Image.Image:
        """A1111's ``Upscaler.upscale`` with any upscaler: model passes, then Lanczos to the size."""
        return builtin_upscale(image, scale, name, None if name in IMAGE_UPSCALERS else self.one_pass(name))

    def one_pass(self, name: str) -> ImageUpscaler:
        file = self.files().get(name)
        if file is None:
            raise InvalidRequest("upscaler", f"unknown upscaler {name!r}; available: {', '.join(self.names())}")

        def run(image: Image.Image) -> Image.Image:
            with self._lock:
                model, scale, arch = self._model(file)
                tile_key = "SWIN" if arch == "SwinIR" else "ESRGAN"
                parameter = next(model.parameters())
                tile = int(self.get(f"{tile_key}_tile"))
                overlap = min(int(self.get(f"{tile_key}_tile_overlap")), tile // 2) if tile else 0
                return upscale_image(model, scale, image, tile=tile, overlap=overlap, device=parameter.device,
                                     dtype=parameter.dtype)
        return run

    def _model(self, file: UpscalerFile) -> tuple[torch.nn.Module, int, str]:
        mtime = file.path.stat().st_mtime
        if self._loaded is not None and self._loaded[:2] == (file.path, mtime):
            return self._loaded[2:]
        self.unload()
        try:
            model, scale, arch = build_upscaler(load_state_dict(file.path, allow_unsafe=self.allow_unsafe))
        except (UnsafeFileError, CorruptFileError, ValueError) as error:
            raise UpscalerError("upscaler", f"{file.name} ({file.path.name}) cannot be used: {error}") from None
        self.memory.place_network(model)
        log.info("Upscaler %s loaded: %s ×%d (%s)", file.name, arch, scale, file.path.name)
        self._loaded = (file.path, mtime, model, scale, arch)
        return model, scale, arch

    def unload(self) -> None:
        with self._lock:
            if self._loaded is not None:
                model = self._loaded[2]
                self._loaded = None
                self.memory.release(model)


class UpscalerModels(Mapping):
    """A read-only mapping for ``GenerationOptions.upscaler_models``: its keys come from the folders;
    a value (one pass of the model) is made only when looked up."""

    def __init__(self, library: UpscalerLibrary):
        self._library = library
        self._names = [name for name in library.files() if name not in IMAGE_UPSCALERS]

    def __getitem__(self, name: str) -> ImageUpscaler:
        if name not in self._names:
            raise KeyError(name)
        return self._library.one_pass(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
