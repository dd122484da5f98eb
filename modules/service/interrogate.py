"""Interrogate: an image → prompt text, with DeepBooru (Danbooru tags) or CLIP (a BLIP caption and
the best phrases of the category lists). The models come from the user's folders
(``models/deepbooru/model-resnet_custom_v3.pt``, ``models/BLIP/<name>``, ``models/CLIP/<name>``),
are loaded when asked for, and are let go afterwards unless ``interrogate_keep_models_in_memory``."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from PIL import Image

from modules.core.devices import MemoryManager
from modules.core.generation.request import InvalidRequest
from modules.core.interrogate.clip_interrogator import (
    Categories, ClipInterrogator, InterrogateOptions, load_blip, load_clip, locate_model,
)
from modules.core.interrogate.deepbooru import TagOptions, load_deepbooru_file, tag_image
from modules.core.paths import Paths
from modules.core.safe_load import CorruptFileError, UnsafeFileError

log = logging.getLogger(__name__)

MODELS = ("clip", "deepdanbooru")
DEEPBOORU_FILE = "model-resnet_custom_v3.pt"
DEEPBOORU_SUFFIXES = (".pt", ".pth", ".safetensors")
BLIP_SUGGESTION = "Salesforce/blip-image-captioning-base"
CLIP_SUGGESTION = "openai/clip-vit-large-patch14"


class InterrogateError(InvalidRequest):
    """A model the user has not put in place, or one that cannot be read: the message says which
    file or folder and what to download."""


class Interrogator:
    def __init__(self, paths: Paths, memory: MemoryManager, settings_get: Callable[[str], object],
                 allow_unsafe: bool = False):
        self.paths, self.memory, self.get, self.allow_unsafe = paths, memory, settings_get, allow_unsafe
        self._lock = threading.Lock()
        self._deepbooru = None
        self._clip: ClipInterrogator | None = None

    def interrogate(self, image: Image.Image, model: str = "clip") -> str:
        if model not in MODELS:
            raise InvalidRequest("model", f"must be one of {', '.join(MODELS)}; got {model!r}")
        image = image.convert("RGB")
        with self._lock:
            try:
                return self._deepbooru_tags(image) if model == "deepdanbooru" else self._clip_text(image)
            finally:
                if not self.get("interrogate_keep_models_in_memory"):
                    self._unload()

    # -- DeepBooru ---------------------------------------------------------------------------------
    def deepbooru_file(self) -> Path:
        for folder in self.paths.deepbooru_dirs:
            if (folder / DEEPBOORU_FILE).is_file():
                return folder / DEEPBOORU_FILE
            found = sorted(p for p in folder.glob("*") if p.suffix.lower() in DEEPBOORU_SUFFIXES) if folder.is_dir() else []
            if found:
                return found[0]
        raise InterrogateError("model", f"no DeepBooru model: put {DEEPBOORU_FILE} (A1111's TorchDeepDanbooru file) "
                                        f"into {self.paths.deepbooru_dirs[0]}")

    def _deepbooru_tags(self, image: Image.Image) -> str:
        if self._deepbooru is None:
            path = self.deepbooru_file()
            try:
                model = load_deepbooru_file(path, allow_unsafe=self.allow_unsafe)
            except (UnsafeFileError, CorruptFileError, ValueError) as error:
                raise InterrogateError("model", f"DeepBooru model {path.name} cannot be used: {error}") from None
            self.memory.place_network(model)
            self._deepbooru = model
            log.info("DeepBooru loaded from %s (%d tags)", path, len(model.tags))
        options = TagOptions(**{key: self.get(key) for key in TagOptions.__dataclass_fields__})
        return tag_image(self._deepbooru, image, options)

    # -- CLIP ---------------------------------------------------------------------------------------
    def _clip_text(self, image: Image.Image) -> str:
        options = InterrogateOptions.from_settings({key: self.get(key) for key in InterrogateOptions.__dataclass_fields__})
        if self._clip is None:
            try:
                blip = load_blip(locate_model(self.paths.models / "BLIP", BLIP_SUGGESTION))
                clip = load_clip(locate_model(self.paths.models / "CLIP", CLIP_SUGGESTION))
            except (FileNotFoundError, ValueError, OSError) as error:
                raise InterrogateError("model", str(error)) from None
            self.memory.place_network(blip.model)
            self.memory.place_network(clip.model)
            parameter = next(blip.model.parameters())
            self._clip = ClipInterrogator(blip, clip, device=parameter.device, dtype=parameter.dtype)
        categories = Categories.load(self.paths.models / "interrogate")
        return self._clip.interrogate(image, categories, options)

    def _unload(self) -> None:
        if self._deepbooru is not None:
            model, self._deepbooru = self._deepbooru, None
            self.memory.release(model)
        if self._clip is not None:
            clip, self._clip = self._clip, None
            self.memory.release(clip.blip.model, clip.clip.model)
