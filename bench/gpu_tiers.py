"""Memory tiers and speed on a GPU: Hanga's generation path against plain diffusers, same process.

Builds random-weight models of the real SD1.5 and SDXL architectures (the shipped configs under
``configs/``; no download), then measures and prints one JSON object:

- diffusers baseline: StableDiffusion(XL)Pipeline all on the GPU, with ``enable_model_cpu_offload``,
  and with ``enable_sequential_cpu_offload``: seconds per image and peak ``max_memory_allocated``;
- Hanga (``run_txt2img``) in the default tier, ``--medvram`` and ``--lowvram``: the same figures;
- sampling speed (it/s, from the time difference between two step counts, so text encoding and
  decoding cancel) at batch 1 and 8, eager and with the fast path (torch.compile), and the time to
  the first image including compilation;
- VAE decode peaks at 1024² and 2048² (Hanga decodes in tiles when it must), and the 1920×1080
  txt2img peak with ``--medvram``;
- ratios against the baseline for each target of issue 6.

Usage (on the GPU machine):   python bench/gpu_tiers.py [--models sd15,sdxl] [--steps 20]
Smoke test on a CPU:          python bench/gpu_tiers.py --tiny [--skip-fast-path]
``--tiny`` uses the test fixtures' tiny architectures at 64×64 with 2 steps: it checks that every
code path runs, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusers import (  # noqa: E402
    AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

from modules.core.conditioning.cond import SdxlConditioning  # noqa: E402
from modules.core.devices import DevicePolicy, MemoryManager  # noqa: E402
from modules.core.generation.job import GenerationOptions, ModelIdentity, decode_to_pixels  # noqa: E402
from modules.core.generation.request import Txt2ImgRequest  # noqa: E402
from modules.core.generation.txt2img import run_txt2img  # noqa: E402
from modules.core.models.family import Detected  # noqa: E402
from modules.core.models.fast_path import enable_fast_path  # noqa: E402
from modules.core.models.loader import StableDiffusionModel  # noqa: E402
from modules.core.offload import TierFlags  # noqa: E402
from modules.core.sampling.noise_schedule import training_alphas_cumprod  # noqa: E402
from modules.core.tokenizer import load_clip_tokenizer, tokenizer_file  # noqa: E402

CONFIGS = ROOT / "configs"
GIB = 2**30


class _Quiet:
    def start_batch(self, *args) -> None: ...
    def step(self, *args) -> None: ...
    def stop_requested(self) -> bool: return False
    def interrupted(self) -> bool: return False


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _clean(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}


def build(family: str, tiny: bool, dtype: torch.dtype) -> StableDiffusionModel:
    """Random weights in the real architecture of ``family`` ("sd15" or "sdxl"), on the CPU."""
    if tiny:
        from tests.fixtures.tiny_families import build_tiny_family, to_ldm_state_dict as family_ldm
        from tests.fixtures.tiny_sd import build_tiny_sd1, to_ldm_state_dict
        from modules.core.models.loader import load_components

        sd = to_ldm_state_dict(build_tiny_sd1()) if family == "sd15" else family_ldm(build_tiny_family("sdxl"))
        model = load_components(sd, CONFIGS)
        for module in model.modules():
            module.to(dtype=dtype)
        return model
    folder = CONFIGS / ("sd1" if family == "sd15" else "sdxl")
    info = _json(folder / "model.json")
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(_clean(_json(folder / "unet" / "config.json")))
    vae = AutoencoderKL.from_config(_clean(_json(folder / "vae" / "config.json")))
    text_encoder = CLIPTextModel(CLIPTextConfig(**_clean(_json(folder / "text_encoder" / "config.json"))))
    text_encoder_2 = None
    sdxl = None
    if family == "sdxl":
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**_clean(_json(folder / "text_encoder_2" / "config.json"))))
        sdxl = SdxlConditioning(refiner=False, pooled_width=text_encoder_2.config.projection_dim, downscale=8)
    for module in (unet, vae, text_encoder, text_encoder_2):
        if module is not None:
            module.to(dtype=dtype).eval().requires_grad_(False)
    schedule = _json(folder / "scheduler" / "scheduler_config.json")
    return StableDiffusionModel(
        family=Detected("sd1" if family == "sd15" else "sdxl", family), unet=unet, vae=vae, text_encoder=text_encoder,
        tokenizer=load_clip_tokenizer(tokenizer_file(CONFIGS)), prediction_type="epsilon",
        alphas_cumprod=training_alphas_cumprod(schedule["beta_start"], schedule["beta_end"], schedule["num_train_timesteps"]),
        latent_scale_factor=info["latent_scale_factor"], latent_channels=4, vae_downscale=8,
        text_encoder_2=text_encoder_2, sdxl=sdxl,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, device: torch.device) -> tuple[float, float]:
    """(seconds, peak GiB allocated during the call)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else 0.0
    return seconds, peak


def _round(value: float) -> float:
    return round(value, 4)


def diffusers_runs(model: StableDiffusionModel, family: str, device: torch.device, size: int, steps: int) -> dict:
    tokenizer = copy.deepcopy(model.tokenizer)
    tokenizer.model_max_length = 77
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    if family == "sdxl":
        tokenizer_2 = copy.deepcopy(tokenizer)
        tokenizer_2.pad_token = "!"
        pipe = StableDiffusionXLPipeline(vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
                                         tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=model.unet, scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=tokenizer, unet=model.unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def run(count: int = steps):
        pipe("a photo of a cat", height=size, width=size, num_inference_steps=count, guidance_scale=7.0,
             generator=torch.Generator("cpu").manual_seed(1))

    results = {}
    modes = ["all_on_gpu"] + (["model_cpu_offload", "sequential_cpu_offload"] if device.type == "cuda" else [])
    for mode in modes:
        if mode == "all_on_gpu":
            pipe.to(device)
        elif mode == "model_cpu_offload":
            pipe.to("cpu")
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.remove_all_hooks()
            pipe.to("cpu")
            pipe.enable_sequential_cpu_offload(device=device)
        run(2)  # warm-up
        seconds, peak = measure(run, device)
        results[mode] = {"image_s": _round(seconds), "peak_gib": _round(peak)}
        if mode == "all_on_gpu":
            short, _ = measure(lambda: run(steps // 2), device)
            results[mode]["it_s"] = _round((steps - steps // 2) / max(seconds - short, 1e-9))
    pipe.remove_all_hooks()
    pipe.to("cpu")
    return results


def hanga_runs(model: StableDiffusionModel, family: str, device: torch.device, dtype: torch.dtype, size: int,
               steps: int, tiny: bool, fast_path: bool = True) -> dict:
    identity = ModelIdentity(family, None)
    policy = DevicePolicy(device, dtype, dtype, dtype)

    def generate(count: int = steps, batch: int = 1, width: int = size, height: int = size):
        request = Txt2ImgRequest(prompt="a photo of a cat", sampler_name="Euler", steps=count, width=width, height=height,
                                 seed=1, batch_size=batch)
        run_txt2img(model, identity, request, GenerationOptions(), _Quiet())

    results = {}
    model.device = device
    for tier in ("default", "medvram", "lowvram"):
        flags = TierFlags(medvram=tier == "medvram", lowvram=tier == "lowvram", auto=False)
        memory = MemoryManager(policy, flags)
        chosen = memory.place(*model.modules(), sdxl=family == "sdxl")
        generate(2)
        seconds, peak = measure(generate, device)
        results[tier] = {"tier": chosen, "image_s": _round(seconds), "peak_gib": _round(peak)}
        if tier == "default":
            short, _ = measure(lambda: generate(steps // 2), device)
            results[tier]["it_s_batch1"] = _round((steps - steps // 2) / max(seconds - short, 1e-9))
            full8, peak8 = measure(lambda: generate(batch=8 if not tiny else 2), device)
            half8, _ = measure(lambda: generate(steps // 2, batch=8 if not tiny else 2), device)
            results[tier]["it_s_batch8"] = _round((steps - steps // 2) / max(full8 - half8, 1e-9))
            results[tier]["images_s_batch8"] = _round((8 if not tiny else 2) / full8)
            for side in ((1024, 2048) if not tiny else (64, 128)):
                latent = torch.randn(1, 4, side // 8, side // 8, device=device, dtype=dtype)
                seconds_dec, peak_dec = measure(lambda: decode_to_pixels(model, latent), device)
                results[tier][f"vae_decode_{side}_peak_gib"] = _round(peak_dec)
                results[tier][f"vae_decode_{side}_s"] = _round(seconds_dec)
                tiled_s, tiled_peak = measure(lambda: decode_to_pixels(model, latent, tiled=True), device)
                results[tier][f"vae_decode_{side}_tiled_peak_gib"] = _round(tiled_peak)
                results[tier][f"vae_decode_{side}_tiled_s"] = _round(tiled_s)
        if tier == "medvram" and family == "sd15":
            width, height = (1920, 1080) if not tiny else (128, 72)
            seconds_big, peak_big = measure(lambda: generate(width=width, height=height), device)
            results[tier][f"txt2img_{width}x{height}_peak_gib"] = _round(peak_big)
            results[tier][f"txt2img_{width}x{height}_s"] = _round(seconds_big)
        memory.release(*model.modules())
    if not fast_path:
        return results
    # the fast path (default tier, compiled U-Net)
    memory = MemoryManager(policy, TierFlags(auto=False))
    memory.place(*model.modules(), sdxl=family == "sdxl")
    enable_fast_path(model.unet, device)
    first, _ = measure(generate, device)
    seconds, peak = measure(generate, device)
    short, _ = measure(lambda: generate(steps // 2), device)
    results["fast_path"] = {"first_image_s_including_compile": _round(first), "image_s": _round(seconds),
                            "peak_gib": _round(peak), "it_s_batch1": _round((steps - steps // 2) / max(seconds - short, 1e-9))}
    memory.release(*model.modules())
    return results


def ratios(base: dict, ours: dict) -> dict:
    out = {}
    all_gpu = base.get("all_on_gpu", {})
    if all_gpu.get("it_s"):
        out["default_vs_diffusers_eager_speed"] = _round(ours["default"]["it_s_batch1"] / all_gpu["it_s"])
        if "fast_path" in ours:
            out["fast_path_vs_diffusers_eager_speed"] = _round(ours["fast_path"]["it_s_batch1"] / all_gpu["it_s"])
    if all_gpu.get("peak_gib"):
        out["default_peak_vs_all_on_gpu"] = _round(ours["default"]["peak_gib"] / all_gpu["peak_gib"])
    if "model_cpu_offload" in base:
        model_offload = base["model_cpu_offload"]
        out["medvram_peak_vs_model_offload"] = _round(ours["medvram"]["peak_gib"] / max(model_offload["peak_gib"], 1e-9))
        out["medvram_time_vs_model_offload"] = _round(ours["medvram"]["image_s"] / model_offload["image_s"])
    if "sequential_cpu_offload" in base:
        sequential = base["sequential_cpu_offload"]
        out["lowvram_time_vs_sequential_offload"] = _round(ours["lowvram"]["image_s"] / sequential["image_s"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="sd15,sdxl")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="tiny fixture models at 64×64, 2 steps (a CPU smoke test)")
    parser.add_argument("--skip-fast-path", action="store_true", help="leave out torch.compile (minutes on a CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    steps = 2 if args.tiny else args.steps
    report = {"bench": "gpu_tiers", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "steps": steps, "dtype": str(dtype).removeprefix("torch."), "models": {}}
    for family in args.models.split(","):
        size = 64 if args.tiny else (512 if family == "sd15" else 1024)
        model = build(family, args.tiny, dtype)
        with torch.no_grad():
            base = diffusers_runs(model, family, device, size, steps)
            ours = hanga_runs(model, family, device, dtype, size, steps, args.tiny, not args.skip_fast_path)
        report["models"][family] = {"size": size, "diffusers": base, "hanga": ours, "ratios": ratios(base, ours)}
        del model
        gc.collect()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
