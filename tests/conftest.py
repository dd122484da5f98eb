import os
import sys
from pathlib import Path

# Tests never reach for a hub: set before anything imports huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import shutil  # noqa: E402

import pytest  # noqa: E402

from tests.fixtures.tiny_sd import build_tiny_sd1, to_ldm_state_dict, write_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models():
    """The diffusers/transformers modules the tiny checkpoint is made from (seed 0)."""
    return build_tiny_sd1(seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_models):
    """A tiny SD1 checkpoint in the real single-file layout, written once per test session."""
    folder = tmp_path_factory.mktemp("checkpoints")
    return write_checkpoint(folder / "tiny-sd1.safetensors", to_ldm_state_dict(tiny_models))


@pytest.fixture
def data_dir(tmp_path, tiny_checkpoint):
    """A fresh ``--data-dir`` with the tiny checkpoint in ``models/Stable-diffusion``."""
    folder = tmp_path / "data"
    checkpoints = folder / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, checkpoints / tiny_checkpoint.name)
    return folder


@pytest.fixture
def service(data_dir):
    from modules.core.devices import DevicePolicy, MemoryManager
    from modules.core.hash_cache import HashCache
    from modules.core.paths import Paths
    from modules.service.generation import GenerationService, ServiceFlags
    from modules.service.models import ModelService
    from modules.service.settings import Settings

    paths = Paths.create(data_dir=data_dir)
    models = ModelService(paths, MemoryManager(DevicePolicy.choose(use_cpu=["all"])), HashCache(paths.cache_file))
    return GenerationService(paths, Settings(paths.config_file), models, ServiceFlags(console_progress=False))


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright, one per browser-test module."""
    from tests.fixtures.live_server import chromium

    with chromium() as instance:
        yield instance
