"""Hostile model files through every loader a user's file can reach.

The crafted files (``tests/fixtures/hostile_files.py``) are first proven live: a plain unpickler
in a subprocess runs each one and its marker appears. Then each goes, as a downloaded file would,
into the folder of every loader and is used the way the UI and the API use it: a checkpoint
chosen with ``sd_model_checkpoint``, a VAE chosen with ``sd_vae`` or lying beside the checkpoint,
``<hypernet:…>``, an embedding named in the prompt, ``<lora:…>``, and the Checkpoint Merger (as a
model and as the VAE to bake in). The marker never appears, what the user is told names the file
and says it was refused, and afterwards a normal generation gives the same picture as before.
Safetensors files whose header lies get a clear error naming them, quickly and without a large
allocation, from every loader too.
"""

from __future__ import annotations

import logging
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from modules.core.generation.request import InvalidRequest, Txt2ImgRequest
from modules.core.paths import Paths
from modules.service.extra_networks import PAGES, network_cards
from modules.service.merger import read_metadata, run_merge
from modules.service.models import ModelLoadError
from tests.fixtures.hostile_files import HOSTILE, LYING_SAFETENSORS, malformed_embeddings

CHECKPOINT = "tiny-sd1.safetensors"
REFUSED = "nothing in it was executed"  # safe_load's refusal, which must reach the user unchanged
REQUEST = Txt2ImgRequest(prompt="a red cat", seed=4, steps=1, width=64, height=64, sampler_name="Euler")
RSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB on Linux


# --------------------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def hanga(tmp_path_factory, tiny_checkpoint):
    """One service for the module (as conftest's ``service``): loading the tiny model once keeps
    some hundred cases fast; each case removes its files again."""
    from modules.core.devices import DevicePolicy, MemoryManager
    from modules.core.hash_cache import HashCache
    from modules.service.generation import GenerationService, ServiceFlags
    from modules.service.models import ModelService
    from modules.service.settings import Settings

    data = tmp_path_factory.mktemp("hostile") / "data"
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, data / "models" / "Stable-diffusion" / CHECKPOINT)
    paths = Paths.create(data_dir=data)
    models = ModelService(paths, MemoryManager(DevicePolicy.choose(use_cpu=["all"])), HashCache(paths.cache_file))
    return GenerationService(paths, Settings(paths.config_file), models, ServiceFlags(console_progress=False))


def generate(service, prompt: str = REQUEST.prompt, **overrides):
    return service.txt2img(replace(REQUEST, prompt=prompt), save_images=False, override_settings=overrides or None)


def pixels(outcome) -> np.ndarray:
    return np.asarray(outcome.result.images[0].image)


@pytest.fixture(scope="module")
def baseline(hanga):
    return pixels(generate(hanga))


@pytest.fixture
def put(hanga, baseline):
    """``put(loader, stem, content, suffix)`` writes a file where ``loader`` looks (with ``suffix``
    when the loader lists such files, else its first one) and presses refresh; removed afterwards.
    Takes the baseline picture first, before any hostile file is near the service."""
    placed: list[Path] = []

    def put(loader: Loader, stem: str, content: bytes, suffix: str) -> Path:
        folder = loader.folder(hanga.paths)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = suffix if suffix in loader.suffixes else loader.suffixes[0]
        path = folder / f"{loader.stem or stem}{suffix}"
        path.write_bytes(content)
        placed.append(path)
        hanga.models.refresh()
        return path

    yield put
    for path in placed:
        path.unlink(missing_ok=True)
    hanga.models.refresh()


# --------------------------------------------------------------------------- the loaders


def refused(error_type: type[Exception], work: Callable[[], object]) -> str:
    with pytest.raises(error_type) as info:
        work()
    return str(info.value)


def use_checkpoint(service, path: Path, caplog) -> str:
    return refused(ModelLoadError, lambda: generate(service, sd_model_checkpoint=path.name))


def use_selected_vae(service, path: Path, caplog) -> str:
    return refused(ModelLoadError, lambda: generate(service, sd_vae=path.name))


def use_vae_beside_checkpoint(service, path: Path, caplog) -> str:
    return refused(ModelLoadError, lambda: generate(service))  # "Automatic" picks it up unasked


def use_hypernetwork(service, path: Path, caplog) -> str:
    return refused(InvalidRequest, lambda: generate(service, f"a red cat <hypernet:{path.stem}:1>"))


def use_lora(service, path: Path, caplog) -> str:
    return refused(InvalidRequest, lambda: generate(service, f"a red cat <lora:{path.stem}:1>"))


def use_embedding(service, path: Path, caplog) -> str:
    """As in A1111, an unreadable embedding is skipped with a warning and the job runs without it."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hanga"):
        outcome = generate(service, f"a red cat, {path.stem}")
    assert "TI hashes" not in outcome.result.infotexts[0]  # the file contributed nothing
    return "\n".join(record.getMessage() for record in caplog.records if path.name in record.getMessage())


def use_merger(service, path: Path, caplog) -> str:
    return refused(InvalidRequest, lambda: run_merge(service.models, path.name, CHECKPOINT, method="Weighted sum"))


def use_merger_vae(service, path: Path, caplog) -> str:
    return refused(InvalidRequest, lambda: run_merge(service.models, CHECKPOINT, method="No interpolation",
                                                     bake_in_vae=path.name, custom_name="baked"))


def use_upscaler(service, path: Path, caplog) -> str:
    return refused(InvalidRequest, lambda: service.upscalers.upscale(Image.new("RGB", (16, 16)), 2, path.stem))


def use_deepbooru(service, path: Path, caplog) -> str:
    return refused(InvalidRequest, lambda: service.interrogate(Image.new("RGB", (64, 64)), "deepdanbooru"))


@dataclass(frozen=True)
class Loader:
    folder: Callable[[Paths], Path]
    suffixes: tuple[str, ...]  # the extensions it lists; the first for files that come with another
    use: Callable[..., str]  # (service, path, caplog) -> what the user is told
    stem: str | None = None  # a fixed file stem, where the name is what makes it be picked


LOADERS: dict[str, Loader] = {
    "checkpoint": Loader(lambda p: p.checkpoints, (".ckpt", ".safetensors"), use_checkpoint),
    "vae-selected": Loader(lambda p: p.vae, (".pt", ".ckpt", ".safetensors"), use_selected_vae),
    "vae-beside-checkpoint": Loader(lambda p: p.checkpoints, (".pt", ".ckpt", ".safetensors"),
                                    use_vae_beside_checkpoint, stem="tiny-sd1.vae"),
    "hypernetwork": Loader(lambda p: p.hypernetworks, (".pt",), use_hypernetwork),
    "embedding": Loader(lambda p: p.embeddings, (".pt", ".bin", ".safetensors", ".png"), use_embedding),
    "lora": Loader(lambda p: p.lora_dirs[0], (".pt", ".ckpt", ".safetensors"), use_lora),
    "merger": Loader(lambda p: p.checkpoints, (".ckpt", ".safetensors"), use_merger),
    "merger-bake-in-vae": Loader(lambda p: p.vae, (".pt", ".ckpt", ".safetensors"), use_merger_vae),
    "upscaler": Loader(lambda p: p.upscaler_dirs["ESRGAN"], (".pth", ".pt", ".ckpt", ".safetensors"), use_upscaler),
    "deepbooru": Loader(lambda p: p.deepbooru_dirs[0], (".pt", ".pth", ".safetensors"), use_deepbooru,
                        stem="model-resnet_custom_v3"),
}


def test_the_loaders_folders_are_the_ones_users_put_files_in(hanga):
    data = hanga.paths.data
    folders = {name: loader.folder(hanga.paths).relative_to(data).as_posix() for name, loader in LOADERS.items()}
    assert folders == {"checkpoint": "models/Stable-diffusion", "vae-selected": "models/VAE",
                       "vae-beside-checkpoint": "models/Stable-diffusion", "hypernetwork": "models/hypernetworks",
                       "embedding": "embeddings", "lora": "models/Lora", "merger": "models/Stable-diffusion",
                       "merger-bake-in-vae": "models/VAE", "upscaler": "models/ESRGAN", "deepbooru": "models/deepbooru"}


# --------------------------------------------------------------------------- the payloads are live


def test_every_hostile_file_runs_its_payload_under_a_plain_unpickler(tmp_path):
    # What makes the refusals below mean something: without Hanga's restrictions each file runs.
    assert len(HOSTILE) >= 7
    markers, files = {}, []
    for name, hostile in HOSTILE.items():
        markers[name] = tmp_path / f"MARKER-{name}"
        files.append(tmp_path / f"{name}{hostile.suffix}")
        files[-1].write_bytes(hostile.build(markers[name]))
    assert not any(marker.exists() for marker in markers.values())
    # An open file, not a path: torch hands any path ending in .safetensors to safetensors instead.
    script = ("import sys, torch\n"
              "for path in sys.argv[1:]:\n"
              "    try:\n"
              "        with open(path, 'rb') as f:\n"
              "            torch.load(f, weights_only=False)\n"
              "    except Exception:\n"
              "        pass  # most payloads leave no loadable checkpoint behind; what ran has run\n")
    subprocess.run([sys.executable, "-c", script, *map(str, files)], check=True, timeout=120, cwd=tmp_path)
    deadline = time.monotonic() + 5  # Popen's child touches its marker a moment later
    while time.monotonic() < deadline and not all(marker.exists() for marker in markers.values()):
        time.sleep(0.05)
    assert [name for name, marker in markers.items() if not marker.exists()] == []


# --------------------------------------------------------------------------- refused by every loader


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("loader", LOADERS)
def test_hostile_file_is_refused_and_nothing_in_it_runs(hanga, put, loader, hostile, tmp_path, caplog):
    marker = tmp_path / "MARKER"
    file = HOSTILE[hostile]
    path = put(LOADERS[loader], file.name, file.build(marker), file.suffix)
    told = LOADERS[loader].use(hanga, path, caplog)
    time.sleep(file.settle)
    assert not marker.exists(), f"{file.trick}: the payload ran through the {loader} loader"
    assert path.name in told, told
    assert REFUSED in told and "--disable-safe-unpickle" in told, told


@pytest.mark.parametrize("loader", LOADERS)
def test_after_a_refusal_the_service_generates_as_before(hanga, baseline, put, loader, tmp_path, caplog):
    file = list(HOSTILE.values())[list(LOADERS).index(loader) % len(HOSTILE)]  # a different one each
    marker = tmp_path / "MARKER"
    path = put(LOADERS[loader], file.name, file.build(marker), file.suffix)
    assert REFUSED in LOADERS[loader].use(hanga, path, caplog)
    path.unlink()  # the user deletes it (a VAE beside the checkpoint would be refused in every job)
    hanga.models.refresh()
    outcome = generate(hanga)
    assert outcome.model.info.name == CHECKPOINT
    assert np.array_equal(pixels(outcome), baseline)  # the model is whole: no partial load or merge
    assert not marker.exists()


# --------------------------------------------------------------------------- lying safetensors headers


@pytest.mark.parametrize("lying", LYING_SAFETENSORS)
@pytest.mark.parametrize("loader", LOADERS)
def test_lying_safetensors_header_is_a_quick_clear_error_naming_the_file(hanga, put, loader, lying, caplog):
    path = put(LOADERS[loader], lying, LYING_SAFETENSORS[lying], ".safetensors")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    told = LOADERS[loader].use(hanga, path, caplog)
    assert time.monotonic() - started < 10
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) * RSS_UNIT
    assert grown < 256 * 2**20, f"the peak memory grew by {grown / 2**20:.0f} MiB"  # no allocation of the lie
    assert path.name in told, told
    assert "not a valid safetensors file" in told or "not a model file" in told, told


# --------------------------------------------------------------------------- listing and looking up


def test_listing_and_looking_up_never_unpickles_and_survives_lying_headers(hanga, put, tmp_path):
    """The extra-networks pages, the checkpoint and VAE lists, the merger's "read metadata" and a
    LoRA looked up by an alias (which reads every LoRA's header) with every file in every folder."""
    markers = []
    folders = {"checkpoint", "vae-selected", "hypernetwork", "embedding", "lora"}
    for loader in (LOADERS[name] for name in sorted(folders)):
        for name, file in HOSTILE.items():
            markers.append(tmp_path / f"MARKER-{len(markers)}")
            put(loader, name, file.build(markers[-1]), file.suffix)
        for name, content in LYING_SAFETENSORS.items():
            put(loader, name, content, ".safetensors")
    cards = {page: {card.name for card in network_cards(hanga, page)} for page in PAGES}
    assert {"zip-os-system", "deep-json-header"} <= cards["lora"] and "legacy-exec" in cards["hypernetworks"]
    assert "memo-stack-global.ckpt" in hanga.models.vaes() and "zip-os-system.ckpt" in hanga.models.titles()
    assert read_metadata(hanga.models, "deep-json-header.safetensors", "zip-os-system.ckpt") == "{}"
    with pytest.raises(InvalidRequest, match="LoRA 'no-such-alias' not found"):
        generate(hanga, "a red cat <lora:no-such-alias:1>")  # the embeddings were all read (and skipped) too
    time.sleep(max(file.settle for file in HOSTILE.values()))
    assert [marker.name for marker in markers if marker.exists()] == []


def test_a_malformed_embedding_is_skipped_and_never_fails_the_job(hanga, baseline, put, caplog):
    # Each of these once failed every job: the whole folder is read for every generation.
    files = malformed_embeddings()
    for name, content in files.items():
        put(LOADERS["embedding"], Path(name).stem, content, Path(name).suffix)
    with caplog.at_level(logging.WARNING, logger="hanga"):
        outcome = generate(hanga)
    assert np.array_equal(pixels(outcome), baseline)
    for name in files:
        assert f"Textual inversion {name} skipped" in caplog.text


def test_safe_but_wrongly_shaped_networks_are_refused_naming_them(hanga, baseline, put):
    """Files that unpickle safely but do not fit: a clear error naming the network, and the model
    is left exactly as it was (a half-merged LoRA is taken out again)."""
    import io

    import torch
    from safetensors.torch import save as save_safetensors

    buffer = io.BytesIO()
    torch.save({64: (5, 6)}, buffer)  # a hypernetwork dict whose layers are not modules' weights
    put(LOADERS["hypernetwork"], "oddnet", buffer.getvalue(), ".pt")
    message = refused(InvalidRequest, lambda: generate(hanga, "a red cat <hypernet:oddnet:1>"))
    assert "hypernetwork oddnet (oddnet.pt) cannot be used" in message
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    misfit = {f"{key}.lora_down.weight": torch.ones(4, 7), f"{key}.lora_up.weight": torch.ones(5, 4)}
    put(LOADERS["lora"], "misfit", save_safetensors(misfit), ".safetensors")
    message = refused(InvalidRequest, lambda: generate(hanga, "a red cat <lora:misfit:1>"))
    assert message.startswith("prompt: LoRA 'misfit' cannot be used with this") and "do not fit" in message
    assert np.array_equal(pixels(generate(hanga)), baseline)
