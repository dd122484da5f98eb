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
