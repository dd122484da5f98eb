"""Switching checkpoints: 30 switches among three checkpoints keep one model resident, and the
process does not grow (RSS sampled after every switch; the figure is printed for the record)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from modules.core.generation.request import Txt2ImgRequest
from tests.fixtures.tiny_sd import make_tiny_checkpoint


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_thirty_switches_among_three_checkpoints_do_not_grow_memory(service, data_dir, capsys):
    folder = data_dir / "models" / "Stable-diffusion"
    for seed, name in ((1, "second.safetensors"), (2, "third.safetensors")):
        make_tiny_checkpoint(folder, name, seed=seed)
    service.models.refresh()
    names = [info.name for info in service.models.checkpoints]
    assert len(names) == 3
    request = Txt2ImgRequest(prompt="a cat", steps=1, width=64, height=64, seed=1, sampler_name="Euler")
    samples, loaded = [], []
    for switch in range(30):
        name = names[switch % 3]
        service.select_checkpoint(name)
        assert service.models.loaded.info.name == name
        loaded.append(weakref.ref(service.models.loaded.model))
        service.txt2img(request, save_images=False)
        gc.collect()
        samples.append(rss_mib())
    after_first_cycle = samples[2]
    growth = max(samples[3:]) - after_first_cycle
    with capsys.disabled():
        print(f"\nRSS after the first cycle {after_first_cycle:.0f} MiB, growth over 27 more switches {growth:.1f} MiB")
    assert growth < 150
    # one model resident: nothing keeps a model this test unloaded alive
    assert service.models.loaded.info.name == names[29 % 3]
    gc.collect()
    alive = {id(model) for ref in loaded if (model := ref()) is not None}
    assert alive == {id(service.models.loaded.model)}


def _two_more(service, data_dir):
    folder = data_dir / "models" / "Stable-diffusion"
    make_tiny_checkpoint(folder, "second.safetensors", seed=1)
    service.models.refresh()
    return "tiny-sd1.safetensors", "second.safetensors"


def test_checkpoints_limit_keeps_models_loaded_for_switching_back(service, data_dir):
    first, second = _two_more(service, data_dir)
    service.settings.set("sd_checkpoints_limit", 2, persist=False)
    a = service.select_checkpoint(first).model
    service.select_checkpoint(second)
    assert service.select_checkpoint(first).model is a  # back without reading the file again
    assert service.models.disk_reads == 2
    service.settings.set("sd_checkpoints_limit", 1, persist=False)
    service.select_checkpoint(second)  # still loaded from before: no read
    assert service.select_checkpoint(first).model is not a  # one model at a time: loaded afresh
    assert service.models.disk_reads == 3
    service.select_checkpoint(second)
    assert service.models.disk_reads == 4


def test_checkpoint_cache_skips_the_disk_and_keeps_its_own_copy(service, data_dir):
    import os

    import torch

    first, second = _two_more(service, data_dir)
    service.settings.set("sd_checkpoint_cache", 2, persist=False)
    model = service.select_checkpoint(first).model
    original = model.unet.conv_in.weight.detach().clone()
    with torch.no_grad():
        model.unet.conv_in.weight.add_(1.0)  # a loaded model changes its tensors in place (VAE swap, LoRA)
    service.select_checkpoint(second)
    again = service.select_checkpoint(first).model
    assert again is not model and service.models.disk_reads == 2  # from the RAM cache
    assert torch.equal(again.unet.conv_in.weight, original)
    path = data_dir / "models" / "Stable-diffusion" / first
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed: read it again
    service.select_checkpoint(second)
    service.select_checkpoint(first)
    assert service.models.disk_reads == 3
