"""--medvram / --lowvram: which component is on the generation device in each phase of a job, the
automatic tier choice, and that offloading changes no pixel. The machine has no GPU, so the
offloader runs with a recording mover: "device" and "offload" are two names for the CPU, and the
recorder says where each module was sent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.core.devices import DevicePolicy, MemoryManager
from modules.core.generation.request import Txt2ImgRequest
from modules.core.offload import AUTO_GIB, Offloader, TierFlags, choose_tier

CUDA, CPU = torch.device("cuda"), torch.device("cpu")
GIB = 2**30
REQUEST = Txt2ImgRequest(prompt="a red cat", negative_prompt="blurry", seed=3, steps=3, width=64, height=64,
                         sampler_name="Euler")


@pytest.mark.parametrize("flags, sdxl, free, tier", [
    (TierFlags(), False, 1 * GIB, "lowvram"),
    (TierFlags(), False, 3 * GIB, "medvram"),
    (TierFlags(), False, 8 * GIB, "default"),
    (TierFlags(), True, 8 * GIB, "medvram"),
    (TierFlags(), True, 5 * GIB, "lowvram"),
    (TierFlags(), True, 24 * GIB, "default"),
    (TierFlags(auto=False), True, 1 * GIB, "default"),
    (TierFlags(medvram=True), False, 80 * GIB, "medvram"),
    (TierFlags(medvram_sdxl=True), False, 80 * GIB, "default"),
    (TierFlags(medvram_sdxl=True), True, 80 * GIB, "medvram"),
    (TierFlags(lowvram=True, medvram=True), False, 80 * GIB, "lowvram"),
    (TierFlags(), False, None, "default"),
])
def test_tier_choice(flags, sdxl, free, tier):
    assert choose_tier(flags, sdxl, CUDA, free) == tier
    assert choose_tier(flags, sdxl, CPU, free) == "default"  # nothing to offload to without a GPU
    assert AUTO_GIB["sd"][0] < AUTO_GIB["sd"][1] and AUTO_GIB["sdxl"][0] < AUTO_GIB["sdxl"][1]


class Recorder:
    """Where each module was last sent ("device" or "offload"), without moving anything."""

    def __init__(self):
        self.where: dict[int, str] = {}

    def __call__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.where[id(module)] = "device" if device.type == "cpu" else "offload"

    def of(self, module: torch.nn.Module) -> str:
        return self.where.get(id(module), "offload")


def _offloaded(model, lowvram: bool) -> tuple[Offloader, Recorder]:
    recorder = Recorder()
    offloader = Offloader(CPU, lowvram=lowvram, offload=torch.device("meta"), mover=recorder)
    offloader.attach(model.unet, model.text_encoders(), model.vae)
    return offloader, recorder


def _spy(module: torch.nn.Module, name: str, seen: list, recorder: Recorder, watched: dict) -> torch.utils.hooks.RemovableHandle:
    def hook(mod, args, output):
        seen.append((name, {label: recorder.of(m) for label, m in watched.items()}))
    return module.register_forward_hook(hook)


def test_medvram_puts_one_component_on_the_device_per_phase_and_changes_no_pixel(service):
    plain = np.asarray(service.txt2img(REQUEST, save_images=False).result.images[0].image)
    model = service.models.loaded.model
    offloader, recorder = _offloaded(model, lowvram=False)
    watched = {"text": model.text_encoder, "unet": model.unet, "vae": model.vae}
    seen: list = []
    spies = [_spy(model.text_encoder, "text", seen, recorder, watched), _spy(model.unet, "unet", seen, recorder, watched),
             _spy(model.vae.decoder, "decode", seen, recorder, watched)]
    try:
        offloaded = np.asarray(service.txt2img(REQUEST, save_images=False).result.images[0].image)
    finally:
        for spy in spies:
            spy.remove()
        offloader.detach()
    assert np.array_equal(plain, offloaded)
    expected = {"text": {"text": "device", "unet": "offload", "vae": "offload"},
                "unet": {"text": "offload", "unet": "device", "vae": "offload"},
                "decode": {"text": "offload", "unet": "offload", "vae": "device"}}
    phases = [name for name, _ in seen]
    assert phases[0] == "text" and phases[-1] == "decode" and phases.count("unet") >= 3
    for name, state in seen:
        assert state == expected[name], (name, state)


def test_lowvram_streams_the_unet_block_by_block(service):
    service.txt2img(REQUEST, save_images=False)
    model = service.models.loaded.model
    unet = model.unet
    offloader, recorder = _offloaded(model, lowvram=True)
    blocks = {"down0": unet.down_blocks[0], "down1": unet.down_blocks[1], "mid": unet.mid_block,
              "up0": unet.up_blocks[0], "up1": unet.up_blocks[1]}
    watched = {**blocks, "conv_in": unet.conv_in, "time": unet.time_embedding, "unet": unet, "text": model.text_encoder}
    seen: list = []
    spies = [_spy(block, name, seen, recorder, watched) for name, block in blocks.items()]
    try:
        service.txt2img(REQUEST, save_images=False)
    finally:
        for spy in spies:
            spy.remove()
        offloader.detach()
    assert len(seen) >= 3 * len(blocks)
    for name, state in seen:
        on_device = {label for label, where in state.items() if where == "device"}
        # the running block and the U-Net's small parts; never the whole U-Net, another block or the text encoder
        assert on_device == {name, "conv_in", "time"}, (name, on_device)


def test_memory_manager_attaches_offloading_for_a_tier_and_release_removes_it(service):
    model = service.models.ensure_loaded(None).model
    memory = MemoryManager(DevicePolicy(CUDA, torch.float32, torch.float32, torch.float32), TierFlags(medvram=True))
    assert not memory.loads_onto_device()  # a tiered model is created in RAM, then placed
    # placing moves weights to the RAM side only (the CUDA side is reached through the hooks)
    assert memory.place(*model.modules(), sdxl=False) == "medvram"
    assert model.unet._forward_pre_hooks and model.text_encoder._forward_pre_hooks
    memory.release(*model.modules())
    assert not model.unet._forward_pre_hooks and not model.text_encoder._forward_pre_hooks
    plain = MemoryManager(DevicePolicy(CUDA, torch.float32, torch.float32, torch.float32), TierFlags(auto=False))
    assert plain.loads_onto_device()
