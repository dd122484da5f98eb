"""Network files for jobs: hypernetworks (``models/hypernetworks/**/*.pt`` or ``--hypernetwork-dir``;
the name is the file name without ``.pt``) and textual-inversion embeddings (``embeddings/``), read
through the restricted unpickler and cached until a file changes."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from PIL import Image

from modules.core.conditioning.embedding_files import (
    IMAGE_SUFFIXES, embedding_in_image, embedding_vectors, is_embedding_file, width_of,
)
from modules.core.conditioning.textual_inversion import TextualInversion
from modules.core.devices import MemoryManager
from modules.core.generation.request import InvalidRequest
from modules.core.hash_cache import HashCache
from modules.core.models.hypernetwork import Hypernetwork, hypernetwork_from_dict
from modules.core.models.lora import Lora, parse_lora
from modules.core.safe_load import CorruptFileError, UnsafeFileError, load_state_dict, load_torch_file, safetensors_metadata

log = logging.getLogger("hanga")


class HypernetworkLibrary:
    """Implements ``core.models.hypernetwork.HypernetworkSource``."""

    def __init__(self, folder: Path, memory: MemoryManager, hashes: HashCache, hashing: bool = True,
                 allow_unsafe: bool = False):
        self.folder = folder
        self.memory = memory
        self.hashes = hashes
        self.hashing = hashing
        self.allow_unsafe = allow_unsafe
        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[float, Hypernetwork]] = {}

    def files(self) -> dict[str, Path]:
        if not self.folder.is_dir():
            return {}
        found = sorted(path for path in self.folder.rglob("*") if path.is_file() and path.suffix.lower() == ".pt")
        return {path.stem: path for path in found if path.stem != "None"}

    def names(self) -> list[str]:
        return list(self.files())

    def load(self, name: str) -> Hypernetwork | None:
        path = self.files().get(name)
        if path is None:
            return None
        mtime = path.stat().st_mtime
        with self._lock:
            cached = self._loaded.get(name)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            try:
                network = hypernetwork_from_dict(load_torch_file(path, allow_unsafe=self.allow_unsafe), name)
            except (UnsafeFileError, CorruptFileError, ValueError, KeyError, RuntimeError, TypeError, AttributeError,
                    IndexError) as error:
                raise InvalidRequest("prompt", f"hypernetwork {name} ({path.name}) cannot be used: {error}") from None
            for module in network.modules():
                self.memory.place_network(module)
            self._loaded[name] = (mtime, network)
            log.info("Hypernetwork %s loaded (%s)", name, ", ".join(str(width) for width in network.layers))
            return network

    def short_hash(self, name: str) -> str | None:
        path = self.files().get(name)
        if path is None or not self.hashing:
            return None
        return self.hashes.sha256(path, f"hypernet/{name}")[:10]


class EmbeddingLibrary:
    """Textual-inversion files under ``embeddings/`` (recursive; the name is the file name without
    its extension, or the name an image carries). Files are re-read when they change; an
    embedding of another width than the model's text encoder is listed as skipped."""

    def __init__(self, folder: Path, hashes: HashCache, hashing: bool = True, allow_unsafe: bool = False):
        self.folder = folder
        self.hashes = hashes
        self.hashing = hashing
        self.allow_unsafe = allow_unsafe
        self._lock = threading.Lock()
        self._read: dict[Path, tuple[float, tuple[str, object] | None]] = {}
        self.skipped: dict[str, int] = {}  # name → its width, for the last width asked for

    def files(self) -> list[Path]:
        """The embedding files (and pictures that may carry one), sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(path for path in self.folder.rglob("*") if path.is_file() and is_embedding_file(path.name))

    def _parse(self, path: Path) -> tuple[str, object] | None:
        try:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(path) as image:
                    data = embedding_in_image(image)
                if data is None:
                    return None  # a picture without an embedding (a preview or an ordinary image)
                name, vectors = str(data.get("name", path.stem)), embedding_vectors(data)
            else:
                name, vectors = path.stem, embedding_vectors(load_torch_file(path, allow_unsafe=self.allow_unsafe))
            width_of(vectors)  # vectors without a width (a 0-d tensor) are no embedding either
            return name, vectors
        # Every job reads the whole folder, so whatever one file holds (unsafe or damaged, JSON nested
        # too deep, a decompression bomb, a dict of the wrong things) must skip that file, not fail the job.
        except Exception as error:  # noqa: BLE001
            log.warning("Textual inversion %s skipped: %s", path.name, error)
            return None

    def for_width(self, width: int) -> list[TextualInversion]:
        """The embeddings a text encoder of ``width`` can use (the others go to ``skipped``)."""
        usable: dict[str, TextualInversion] = {}
        skipped: dict[str, int] = {}
        with self._lock:
            for path in self.files():
                mtime = path.stat().st_mtime
                cached = self._read.get(path)
                if cached is None or cached[0] != mtime:
                    cached = self._read[path] = (mtime, self._parse(path))
                if cached[1] is None:
                    continue
                name, vectors = cached[1]
                if width_of(vectors) != width:  # SDXL's clip_l + clip_g pair counts as their sum
                    skipped[name] = width_of(vectors)
                    continue
                sha = self.hashes.sha256(path, f"textual_inversion/{name}") if self.hashing else None
                usable[name] = TextualInversion(name, vectors, sha[:12] if sha else None)
        self.skipped = skipped
        return list(usable.values())

    def catalogue(self, width: int) -> tuple[dict[str, tuple[Path, int]], dict[str, tuple[Path, int]]]:
        """``(usable, skipped)`` for a text encoder of ``width``: name → (file, its width)."""
        self.for_width(width)
        usable: dict[str, tuple[Path, int]] = {}
        skipped: dict[str, tuple[Path, int]] = {}
        with self._lock:
            for path, (_, parsed) in sorted(self._read.items()):
                if parsed is not None and path.is_file():
                    name, vectors = parsed
                    (usable if width_of(vectors) == width else skipped)[name] = (path, width_of(vectors))
        return usable, skipped


LORA_SUFFIXES = (".pt", ".ckpt", ".safetensors")


class LoraLibrary:
    """LoRA files (``models/Lora``, ``models/LyCORIS`` or ``--lora-dir``; ``.pt``/``.ckpt``/
    ``.safetensors``), found by file name or by the alias in their metadata (``ss_output_name``)."""

    def __init__(self, folders: tuple[Path, ...], hashes: HashCache, hashing: bool = True, allow_unsafe: bool = False):
        self.folders = folders
        self.hashes = hashes
        self.hashing = hashing
        self.allow_unsafe = allow_unsafe
        self._lock = threading.Lock()
        self._parsed: dict[tuple[Path, float, int], Lora] = {}
        self._metadata: dict[tuple[Path, float], dict[str, str]] = {}

    def files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for folder in self.folders:
            if folder.is_dir():
                for path in sorted(folder.rglob("*")):
                    if path.is_file() and path.suffix.lower() in LORA_SUFFIXES:
                        found.setdefault(path.stem, path)
        return found

    def metadata(self, path: Path) -> dict[str, str]:
        """A safetensors file's metadata, read once per version of the file ({} for others)."""
        if path.suffix.lower() != ".safetensors":
            return {}
        key = (path, path.stat().st_mtime)
        if key not in self._metadata:
            self._metadata[key] = safetensors_metadata(path)
        return self._metadata[key]

    def _find(self, name: str) -> Path | None:
        files = self.files()
        if name in files:
            return files[name]
        return next((path for path in files.values() if self.metadata(path).get("ss_output_name") == name), None)

    def load(self, name: str, model) -> Lora | None:
        path = self._find(name)
        if path is None:
            return None
        key = (path, path.stat().st_mtime, id(model.unet))
        with self._lock:
            if key not in self._parsed:
                try:
                    weights = load_state_dict(path, allow_unsafe=self.allow_unsafe)
                    self._parsed = {k: v for k, v in self._parsed.items() if k[0] != path}
                    self._parsed[key] = parse_lora(weights, name, model.unet, model.text_encoder, model.text_encoder_2,
                                                   model.unet_ldm_names)
                except (UnsafeFileError, CorruptFileError, ValueError) as error:
                    raise InvalidRequest("prompt", f"LoRA {name} ({path.name}) cannot be used: {error}") from None
                if self._parsed[key].unmatched:
                    log.warning("LoRA %s: %d modules match nothing in this model", name, self._parsed[key].unmatched)
            return self._parsed[key]

    def short_hash(self, name: str) -> str | None:
        """``sshs_model_hash`` from the metadata if present, else the addnet hash; 12 hex."""
        path = self._find(name)
        if path is None or not self.hashing:
            return None
        given = self.metadata(path).get("sshs_model_hash")
        if given:
            return given[:12]
        return self.hashes.addnet(path, f"lora/{name}")[:12]
