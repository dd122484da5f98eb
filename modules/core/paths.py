"""Where Hanga's code, configs and the user's data live.

A1111 semantics: ``--data-dir`` is the base of all user data (default: the install directory);
``--models-dir`` overrides ``<data>/models``; ``--ckpt-dir`` adds a checkpoint directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

INSTALL_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Paths:
    install: Path
    data: Path
    models: Path
    extra_checkpoint_dirs: tuple[Path, ...] = field(default_factory=tuple)
    extra_checkpoint_files: tuple[Path, ...] = field(default_factory=tuple)
    hypernetwork_dir: Path | None = None  # --hypernetwork-dir
    embeddings_dir: Path | None = None  # --embeddings-dir
    lora_dir: Path | None = None  # --lora-dir
    upscaler_dir_overrides: tuple[tuple[str, Path], ...] = ()  # --esrgan-models-path …: (kind, folder)

    @classmethod
    def create(
        cls,
        data_dir: str | Path | None = None,
        models_dir: str | Path | None = None,
        ckpt_dirs: tuple[str | Path, ...] = (),
        ckpt_files: tuple[str | Path, ...] = (),
        install: Path = INSTALL_DIR,
        hypernetwork_dir: str | Path | None = None,
        embeddings_dir: str | Path | None = None,
        lora_dir: str | Path | None = None,
        upscaler_dirs: dict[str, str | Path | None] | None = None,
    ) -> "Paths":
        data = Path(data_dir).expanduser().resolve() if data_dir else install
        models = Path(models_dir).expanduser().resolve() if models_dir else data / "models"
        return cls(
            install=install,
            data=data,
            models=models,
            extra_checkpoint_dirs=tuple(Path(d).expanduser().resolve() for d in ckpt_dirs if d),
            extra_checkpoint_files=tuple(Path(f).expanduser().resolve() for f in ckpt_files if f),
            hypernetwork_dir=Path(hypernetwork_dir).expanduser().resolve() if hypernetwork_dir else None,
            embeddings_dir=Path(embeddings_dir).expanduser().resolve() if embeddings_dir else None,
            lora_dir=Path(lora_dir).expanduser().resolve() if lora_dir else None,
            upscaler_dir_overrides=tuple((kind, Path(folder).expanduser().resolve())
                                         for kind, folder in (upscaler_dirs or {}).items() if folder),
        )

    @property
    def configs(self) -> Path:
        return self.install / "configs"

    @property
    def checkpoints(self) -> Path:
        return self.models / "Stable-diffusion"

    @property
    def vae(self) -> Path:
        return self.models / "VAE"

    @property
    def hypernetworks(self) -> Path:
        return self.hypernetwork_dir or self.models / "hypernetworks"

    @property
    def lora_dirs(self) -> tuple[Path, ...]:
        """LoRA folders: ``models/Lora`` (or --lora-dir), then the legacy ``models/LyCORIS``."""
        return (self.lora_dir or self.models / "Lora", self.models / "LyCORIS")

    @property
    def upscaler_dirs(self) -> dict[str, Path]:
        """Upscaler model folders by architecture family (A1111's names and flags)."""
        folders = {kind: self.models / kind for kind in ("ESRGAN", "RealESRGAN", "SwinIR")}
        folders.update(dict(self.upscaler_dir_overrides))
        return folders

    @property
    def deepbooru_dirs(self) -> tuple[Path, ...]:
        """DeepDanbooru: ``models/deepbooru`` and the folders A1111 versions used."""
        return (self.models / "deepbooru", self.models / "DeepDanbooru", self.models / "torch_deepdanbooru")

    @property
    def embeddings(self) -> Path:
        return self.embeddings_dir or self.data / "embeddings"

    @property
    def outputs(self) -> Path:
        return self.data / "outputs"

    @property
    def config_file(self) -> Path:
        return self.data / "config.json"

    @property
    def cache_file(self) -> Path:
        return self.data / "cache.json"

    @property
    def params_file(self) -> Path:
        return self.data / "params.txt"

    @property
    def styles_file(self) -> Path:
        return self.data / "styles.csv"

    @property
    def extension_dirs(self) -> tuple[Path, ...]:
        """User extensions (``<data>/extensions``), then the built-in ones."""
        return (self.data / "extensions", self.install / "extensions-builtin")

    @property
    def tmp(self) -> Path:
        return self.data / "tmp"

    def model_dirs(self) -> list[Path]:
        """The model folders a new user is expected to find (created at start-up)."""
        return [self.checkpoints, self.vae, self.hypernetworks, self.lora_dirs[0], self.embeddings]

    def resolve_output(self, configured: str) -> Path:
        """Settings hold output dirs relative to the data dir (``outputs/txt2img-images``)."""
        path = Path(configured).expanduser()
        return path if path.is_absolute() else self.data / path
