"""The checkpoint list and the loaded model(s).

Loading goes through the restricted loader (``core/safe_load.py``); a missing, corrupt, unsafe or
unsupported file raises ``ModelLoadError`` with a message for the user, and the previous model
stays usable only if loading never started.

By default one model is held at a time (A1111's ``sd_checkpoints_limit`` 1). With a higher limit
the models switched away from wait for their turn (in RAM with ``sd_checkpoints_keep_in_cpu``, else
on the device) and come back without reading their file; ``sd_checkpoint_cache`` keeps copies of
that many checkpoint files' tensors in RAM so loading one again skips the disk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from modules.core.checkpoints import CheckpointInfo, discover, find
from modules.core.devices import MemoryManager
from modules.core.generation.job import ModelIdentity
from modules.core.hash_cache import HashCache
from modules.core.models.ldm_config import read_ldm_yaml
from modules.core.models.loader import StableDiffusionModel, UnsupportedModelError, load_components
from modules.core.models.vae import VaeChoice, discover_vaes, put_weights, resolve_vae, snapshot, vae_weights
from modules.core.paths import Paths
from modules.core.safe_load import CorruptFileError, UnsafeFileError, load_state_dict

log = logging.getLogger("hanga")


class ModelLoadError(RuntimeError):
    pass


@dataclass
class LoadedModel:
    info: CheckpointInfo
    model: StableDiffusionModel
    vae: VaeChoice = VaeChoice(None, "the checkpoint's own")
    vae_hash: str | None = None
    baked_vae: dict | None = None  # the checkpoint's own VAE weights while another is in place
    attention: str | None = None  # the cross_attention_optimization choice its U-Net is set for

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(name=self.info.stem, short_hash=self.info.shorthash, vae_name=self.vae.name,
                             vae_hash=self.vae_hash)


@dataclass(frozen=True)
class Residency:
    """How many models stay loaded and cached (A1111's settings of the same names)."""

    limit: int = 1  # sd_checkpoints_limit: models loaded at once (the current one included)
    keep_in_cpu: bool = True  # sd_checkpoints_keep_in_cpu: the waiting ones leave the device
    cache: int = 0  # sd_checkpoint_cache: checkpoint files whose tensors stay in RAM


class ModelService:
    def __init__(self, paths: Paths, memory: MemoryManager, hashes: HashCache, hashing: bool = True, allow_unsafe: bool = False,
                 vae_path: Path | None = None, vae_dirs: tuple[Path, ...] = ()):
        self.paths = paths
        self.memory = memory
        self.hashes = hashes
        self.hashing = hashing
        self.allow_unsafe = allow_unsafe
        self.vae_path = vae_path  # --vae-path: always this VAE
        self.vae_dirs = vae_dirs  # --vae-dir
        self._lock = threading.RLock()
        self._checkpoints: list[CheckpointInfo] = []
        self._loaded: LoadedModel | None = None
        self._waiting: list[LoadedModel] = []  # loaded earlier, most recently used last
        self._file_cache: OrderedDict[tuple, dict] = OrderedDict()  # (path, mtime, size) → tensors
        self.disk_reads = 0  # checkpoint files read from disk (the log and tests show the cache working)
        self.refresh()

    # -- the list -------------------------------------------------------------------------------
    def refresh(self) -> list[CheckpointInfo]:
        found = discover([self.paths.checkpoints, *self.paths.extra_checkpoint_dirs], self.paths.extra_checkpoint_files)
        with self._lock:
            self._checkpoints = [self._with_cached_hash(info) for info in found]
            return list(self._checkpoints)

    def _with_cached_hash(self, info: CheckpointInfo) -> CheckpointInfo:
        sha = self.hashes.cached(info.path, info.cache_key) if self.hashing else None
        return replace(info, sha256=sha) if sha else info

    @property
    def checkpoints(self) -> list[CheckpointInfo]:
        with self._lock:
            return list(self._checkpoints)

    def titles(self) -> list[str]:
        return [info.title for info in self.checkpoints]

    def find(self, name: str) -> CheckpointInfo | None:
        return find(self.checkpoints, name)

    def folder_hint(self) -> str:
        return f"Put a .safetensors or .ckpt checkpoint into {self.paths.checkpoints} and press the refresh button."

    # -- the loaded model -----------------------------------------------------------------------
    @property
    def loaded(self) -> LoadedModel | None:
        return self._loaded

    def ensure_loaded(self, wanted: str | None, residency: Residency = Residency()) -> LoadedModel:
        """The model for ``wanted`` (a title or alias; empty = current or first), loading if needed."""
        with self._lock:
            info = self._choose(wanted)
            if self._loaded is not None and self._loaded.info.path == info.path:
                return self._loaded
            waiting = next((loaded for loaded in self._waiting if loaded.info.path == info.path), None)
            if waiting is not None:
                self._waiting.remove(waiting)
            self._set_aside(residency)
            if waiting is not None:
                self.memory.place(*waiting.model.modules(), sdxl=waiting.model.sdxl is not None)
                self._loaded = waiting
                log.info("Model %s back from the loaded models", info.title)
                return waiting
            return self._load(info, residency)

    def _set_aside(self, residency: Residency) -> None:
        """Make room for another current model: the current one waits (limit > 1) or is released."""
        current, self._loaded = self._loaded, None
        if current is not None and residency.limit > 1:
            if residency.keep_in_cpu:
                self.memory.release(*current.model.modules())
            self._waiting.append(current)
        elif current is not None:
            self.memory.release(*current.model.modules())
        while len(self._waiting) > max(0, residency.limit - 1):
            self.memory.release(*self._waiting.pop(0).model.modules())

    def _choose(self, wanted: str | None) -> CheckpointInfo:
        if wanted:
            info = self.find(wanted)
            if info is None:
                raise ModelLoadError(f"Checkpoint {wanted!r} not found. {self.folder_hint()}")
            return info
        if self._loaded is not None:
            return self._loaded.info
        if not self._checkpoints:
            raise ModelLoadError(f"No checkpoint found. {self.folder_hint()}")
        return self._checkpoints[0]

    # -- VAE ------------------------------------------------------------------------------------------
    def vaes(self) -> dict[str, Path]:
        """The VAE dropdown: file name → path (§6.2's candidates)."""
        return discover_vaes([self.paths.checkpoints, *self.paths.extra_checkpoint_dirs], [self.paths.vae], self.vae_dirs)

    def ensure_vae(self, loaded: LoadedModel, setting: str, overrides_per_model: bool = True,
                   selected_beats_near: bool = True) -> LoadedModel:
        """Put the VAE §6.2 resolves for ``loaded``'s checkpoint into it (the weights are copied into
        the model's VAE in place; the checkpoint's own are kept aside for switching back)."""
        choice = resolve_vae(loaded.info.path, self.vaes(), setting, self.vae_path, overrides_per_model,
                             selected_beats_near)
        with self._lock:
            if choice.path == loaded.vae.path:
                return loaded
            vae = loaded.model.vae
            if choice.path is None:
                put_weights(vae, loaded.baked_vae)
                loaded.baked_vae, loaded.vae_hash = None, None
            else:
                try:
                    weights = vae_weights(load_state_dict(choice.path, allow_unsafe=self.allow_unsafe), vae)
                except (UnsafeFileError, CorruptFileError, ValueError) as error:
                    raise ModelLoadError(f"VAE {choice.path.name}: {error}") from error
                if loaded.baked_vae is None:
                    loaded.baked_vae = snapshot(vae)
                put_weights(vae, weights)
                sha = self.hashes.sha256(choice.path, f"vae/{choice.path.name}") if self.hashing else None
                loaded.vae_hash = sha[:10] if sha else None
            loaded.vae = choice
            log.info("VAE: %s (%s)", choice.name or "the checkpoint's own", choice.source)
            return loaded

    def hashed(self, info: CheckpointInfo) -> CheckpointInfo:
        """``info`` with its sha256 (computed now, or read from the cache) unless --no-hashing."""
        if not self.hashing or info.sha256:
            return info
        with self._lock:
            info = replace(info, sha256=self.hashes.sha256(info.path, info.cache_key))
            self._checkpoints = [info if c.path == info.path else c for c in self._checkpoints]
        return info

    def _read(self, path: Path, cache: int) -> dict:
        """The file's tensors, from the RAM cache when it holds this version of the file. The cache
        keeps its own copies: a loaded model takes the tensors it is given and changes some in place
        (a VAE swap, LoRA merges)."""
        stat = path.stat()
        key = (path, stat.st_mtime_ns, stat.st_size)
        while len(self._file_cache) > cache:
            self._file_cache.popitem(last=False)
        cached = self._file_cache.get(key)
        if cached is not None:
            self._file_cache.move_to_end(key)
            return {name: tensor.clone() for name, tensor in cached.items()}
        state_dict = load_state_dict(path, allow_unsafe=self.allow_unsafe)
        self.disk_reads += 1
        if cache > 0:
            for old in [k for k in self._file_cache if k[0] == path]:
                del self._file_cache[old]
            self._file_cache[key] = {name: tensor.clone() for name, tensor in state_dict.items()}
            while len(self._file_cache) > cache:
                self._file_cache.popitem(last=False)
        return state_dict

    def _load(self, info: CheckpointInfo, residency: Residency = Residency()) -> LoadedModel:
        started = time.perf_counter()
        self._set_aside(residency)
        if not info.path.is_file():
            raise ModelLoadError(f"{info.path}: file not found (was it moved or deleted? press refresh)")
        info = self.hashed(info)
        try:
            state_dict = self._read(info.path, residency.cache)
            overrides = read_ldm_yaml(info.yaml) if info.yaml else None
            policy = self.memory.policy
            if not self.memory.loads_onto_device():  # a tier may keep it in RAM: create it there
                policy = replace(policy, device=torch.device("cpu"))
            model = load_components(state_dict, self.paths.configs, overrides, policy)
            model.device = self.memory.device
        except (UnsafeFileError, CorruptFileError, UnsupportedModelError) as error:
            raise ModelLoadError(str(error)) from error
        except (ValueError, KeyError, RuntimeError) as error:
            raise ModelLoadError(f"{info.path.name}: not a loadable Stable Diffusion checkpoint ({error})") from error
        del state_dict
        tier = self.memory.place(*model.modules(), sdxl=model.sdxl is not None)
        self._loaded = LoadedModel(info, model)
        log.info("Model %s loaded in %.1fs (%s; memory tier: %s)", info.title, time.perf_counter() - started,
                 self.memory.policy.describe(), tier)
        return self._loaded

    def unload(self) -> None:
        """Release every loaded model (the current one and those waiting)."""
        with self._lock:
            if self._loaded is not None:
                loaded, self._loaded = self._loaded, None
                self.memory.release(*loaded.model.modules())
            while self._waiting:
                self.memory.release(*self._waiting.pop().model.modules())
