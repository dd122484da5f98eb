"""Per-step overhead of Hanga's txt2img loop against a bare diffusers loop, same model, same process.

Both loops run the same U-Net on the same latents and text conditioning with CFG (one batched
cond+uncond call per step), Euler sampling, for the same number of steps:

- baseline: diffusers' EulerDiscreteScheduler driven by the usual hand-written loop
  (scale_model_input → U-Net → CFG on eps → scheduler.step);
- hanga: ``modules.core.sampling.run.sample`` with the CFG denoiser (k-diffusion formulation,
  per-image generators, progress callback, stop checks).

Also times whole images: diffusers' StableDiffusionPipeline against ``run_txt2img`` (conditioning,
sampling, VAE decode). Prints one JSON object. Usage:

    python bench/txt2img_overhead.py [--device cpu|cuda] [--size 256] [--steps 20] [--repeats 5]

The default size is 512 on CUDA and 256 on the CPU (the tiny U-Net's full-resolution attention
makes 512² take minutes on two CPU cores without changing what is measured).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline  # noqa: E402

from modules.core.conditioning.clip_text import ClipTextConditioner  # noqa: E402
from modules.core.devices import DevicePolicy, MemoryManager  # noqa: E402
from modules.core.generation.request import Txt2ImgRequest  # noqa: E402
from modules.core.generation.txt2img import GenerationOptions, ModelIdentity, run_txt2img  # noqa: E402
from modules.core.models.loader import load_components  # noqa: E402
from modules.core.rng import ImageRNG  # noqa: E402
from modules.core.sampling.denoiser import CFGDenoiser, UNetDenoiser  # noqa: E402
from modules.core.sampling.noise_schedule import DiscreteSchedule  # noqa: E402
from modules.core.sampling.run import SamplerOptions, plan, sample  # noqa: E402
from modules.core.sampling.samplers import resolve_sampler  # noqa: E402
from tests.fixtures.tiny_sd import build_tiny_sd1, to_ldm_state_dict  # noqa: E402


class _Quiet:
    def start_batch(self, *args) -> None: ...
    def step(self, *args) -> None: ...
    def stop_requested(self) -> bool: return False
    def interrupted(self) -> bool: return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sd_euler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)


def baseline_loop(model, cond, uncond, noise, steps, cfg):
    scheduler = sd_euler()
    scheduler.set_timesteps(steps, device=noise.device)
    latents = noise * scheduler.init_noise_sigma
    context = torch.cat([cond, uncond])
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        eps = model.unet(model_input.to(model.unet.dtype), t, encoder_hidden_states=context, return_dict=False)[0]
        eps_cond, eps_uncond = eps.float().chunk(2)
        latents = scheduler.step(eps_uncond + cfg * (eps_cond - eps_uncond), t, latents, return_dict=False)[0]
    return latents


def hanga_loop(model, cond, uncond, shape, steps, cfg):
    sampler, scheduler = resolve_sampler("Euler", "Automatic")
    schedule = DiscreteSchedule(model.alphas_cumprod)
    denoiser = CFGDenoiser(UNetDenoiser(model.unet, schedule, model.prediction_type), lambda s: cond, lambda s: uncond, cfg)
    rng = ImageRNG(shape, [1], model.unet.device)
    return sample(plan(sampler, scheduler, SamplerOptions()), steps, denoiser, rng, schedule, SamplerOptions(), lambda i, d: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=0, help="image side in pixels (default 512 on CUDA, 256 on CPU)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    args.size = args.size or (512 if device.type == "cuda" else 256)
    torch.manual_seed(0)

    model = load_components(to_ldm_state_dict(build_tiny_sd1(seed=0)), ROOT / "configs")
    MemoryManager(DevicePolicy.choose(use_cpu=[] if device.type == "cuda" else ["all"])).place(*model.modules())
    conditioner = ClipTextConditioner(model.tokenizer, model.text_encoder)
    cond, uncond = conditioner.encode(["a photo of a cat"]), conditioner.encode([""])
    cfg = 7.0
    loops = {}
    with torch.no_grad():
        # The small size makes each U-Net call cheap, so any per-step overhead of the loop shows.
        for size in (64, args.size):
            shape = (4, size // 8, size // 8)
            noise = torch.randn((1, *shape), device=device)
            base = _timed(lambda: baseline_loop(model, cond, uncond, noise, args.steps, cfg), device, args.repeats)
            ours = _timed(lambda: hanga_loop(model, cond, uncond, shape, args.steps, cfg), device, args.repeats)
            loops[f"{size}x{size}"] = {
                "baseline_step_ms": round(1000 * base / args.steps, 3),
                "hanga_step_ms": round(1000 * ours / args.steps, 3),
                "step_time_ratio": round(ours / base, 4),
            }

        tokenizer = copy.deepcopy(model.tokenizer)
        tokenizer.model_max_length = 77  # the pipeline pads to it; Hanga chunks instead
        pipe = StableDiffusionPipeline(
            vae=model.vae, text_encoder=model.text_encoder, tokenizer=tokenizer, unet=model.unet,
            scheduler=sd_euler(),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        request = Txt2ImgRequest(prompt="a photo of a cat", sampler_name="Euler", steps=args.steps,
                                 width=args.size, height=args.size, seed=1, cfg_scale=cfg)
        identity = ModelIdentity("tiny-sd1", None)
        pipe_image = _timed(lambda: pipe("a photo of a cat", height=args.size, width=args.size, num_inference_steps=args.steps,
                                         guidance_scale=cfg, generator=torch.Generator(device).manual_seed(1)), device, args.repeats)
        our_image = _timed(lambda: run_txt2img(model, identity, request, GenerationOptions(), _Quiet()), device, args.repeats)

    print(json.dumps({
        "bench": "txt2img_overhead",
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": "tiny SD1 (random weights, fixture architecture)",
        "steps": args.steps,
        "sampling_loop": loops,
        "image_size": f"{args.size}x{args.size}",
        "baseline_pipeline_image_s": round(pipe_image, 4),
        "hanga_image_s": round(our_image, 4),
        "image_time_ratio": round(our_image / pipe_image, 4),
    }, indent=2))


if __name__ == "__main__":
    main()
