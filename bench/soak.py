"""Soak: many mixed generations through the HTTP API on the tiny models; the server's memory must
stop growing once it is warm.

Builds a temporary ``--data-dir`` with three tiny SD1 checkpoints, a standalone VAE and a tiny
LoRA, starts the real server (``webui.py --api``) and drives it over HTTP with a deterministic mix
(from ``--seed``): txt2img and img2img (some inpainting, some hires fix), sizes 64-128, every
sampler the server lists, batch sizes 1-3, n_iter 1-2, steps 1-4, LoRA on and off, some jobs
saved to the outputs folder, some interrupted from a second thread, some watched through
``/sdapi/v1/progress`` with a live preview every step (cheap and full-VAE previews), VAE
switches, and ``--switches`` checkpoint switches spread evenly over the run.

The server process's RSS is sampled after every generation (and, when the server runs on CUDA,
the allocated VRAM that ``/sdapi/v1/memory`` reports). The first ``--warmup`` generations are the
warm-up; growth is the RSS at the end minus the RSS right after the warm-up. Prints one JSON
object; the exit status is 1 when the growth passes ``--threshold-mib`` or a request failed.

    python bench/soak.py [--generations 500] [--switches 20] [--warmup 50] [--threshold-mib 150] [--seed 0]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.live_server import Server  # noqa: E402
from tests.fixtures.tiny_sd import VAE_PREFIX, build_tiny_sd1, make_tiny_checkpoint, vae_to_ldm, write_checkpoint  # noqa: E402
from tests.test_lora import kohya_lora  # noqa: E402

MIB = 2**20
CURVE_POINTS = 20
API = "/sdapi/v1"
LORA = "soak_lora"
VAE = "soak-vae.safetensors"
VAE_CHOICES = (VAE, "None", "Automatic")
SIZES = range(64, 129, 8)
# Samplers that fail (HTTP 500, as in A1111) when an img2img or hires pass runs fewer steps than
# this: DPM fast/adaptive get sigma_min == sigma_max, UniPC needs its order's worth of timesteps.
PARTIAL_PASS_STEPS = {"DPM fast": 1, "DPM adaptive": 1, "UniPC": 3}


def make_data_dir(root: Path) -> Path:
    """Three tiny checkpoints, one VAE file and one LoRA, laid out as a user's folders."""
    data = root / "data"
    for number in range(3):
        make_tiny_checkpoint(data / "models" / "Stable-diffusion", f"soak-{number}.safetensors", seed=number)
    models = build_tiny_sd1(seed=7)
    vae = {key[len(VAE_PREFIX):]: tensor.contiguous() for key, tensor in vae_to_ldm(models.vae).items()}
    write_checkpoint(data / "models" / "VAE" / VAE, vae)
    lora = data / "models" / "Lora" / f"{LORA}.safetensors"
    lora.parent.mkdir(parents=True)
    save_file(kohya_lora(models, scale=0.3), str(lora))
    return data


@dataclass(frozen=True)
class Generation:
    """One API call of the mix."""

    img2img: bool
    body: dict
    interrupt_after_s: float | None  # POST /interrupt this long after sending, from another thread
    watch: bool  # poll /progress (with its live preview) while it runs


def _png(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def plan_generation(rng: random.Random, samplers: list[str]) -> Generation:
    width, height = rng.choice(SIZES), rng.choice(SIZES)
    lora = f" <lora:{LORA}:0.8>" if rng.random() < 0.4 else ""
    body = {
        "prompt": f"a {rng.choice(['red', 'blue', 'green'])} {rng.choice(['cat', 'house', 'tree'])}{lora}",
        "negative_prompt": rng.choice(["", "blurry"]),
        "seed": rng.randrange(2**31), "sampler_name": rng.choice(samplers), "steps": rng.randint(1, 4),
        "cfg_scale": rng.choice([1.0, 5.0, 7.0]), "width": width, "height": height,
        "batch_size": rng.randint(1, 3), "n_iter": rng.randint(1, 2), "save_images": rng.random() < 0.3,
    }
    if body["sampler_name"] == "UniPC":  # fewer steps than its order are refused (422), as they should be
        body["steps"] = max(body["steps"], 3)
    least = PARTIAL_PASS_STEPS.get(body["sampler_name"], 0)
    img2img = rng.random() < 0.4
    if img2img:
        pixels = np.random.default_rng(rng.randrange(2**31)).integers(0, 256, (height, width, 3), dtype=np.uint8)
        strength = rng.choice([0.3, 0.6, 0.9])
        body.update(init_images=[_png(Image.fromarray(pixels))], denoising_strength=strength)
        while int(strength * body["steps"]) < least:
            body["steps"] += 1
        if rng.random() < 0.3:
            mask = Image.new("L", (width, height), 0)
            mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
            body.update(mask=_png(mask), inpainting_fill=rng.randint(0, 3))
    elif rng.random() < 0.1:
        body.update(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=max(rng.randint(1, 2), least + 1))
    interrupt = rng.uniform(0.02, 0.5) if rng.random() < 0.1 else None
    return Generation(img2img, body, interrupt, watch=rng.random() < 0.3)


class Soak:
    def __init__(self, server: Server):
        # A fresh connection per request: after a 500 the server drops the connection, and a reused
        # one would fail the next request too.
        self.client = httpx.Client(base_url=server.url + API, timeout=600, limits=httpx.Limits(max_keepalive_connections=0))
        self.process = psutil.Process(server.process.pid)
        self.errors: list[str] = []
        self.previews_seen = 0
        self.interrupts = 0

    def call(self, method: str, path: str, what: str, **options) -> httpx.Response | None:
        try:
            response = self.client.request(method, path, **options)
        except httpx.HTTPError as error:
            self.errors.append(f"{what}: {type(error).__name__}: {error}")
            return None
        if response.status_code != 200:
            self.errors.append(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
            return None
        return response

    def rss_mib(self) -> float:
        return self.process.memory_info().rss / MIB

    def vram_mib(self) -> float | None:
        response = self.call("GET", "/memory", "memory")
        cuda = response.json()["cuda"] if response is not None else {}
        return cuda["allocated"]["current"] / MIB if "allocated" in cuda else None

    def generate(self, number: int, generation: Generation) -> None:
        done = threading.Event()
        helpers = []
        if generation.interrupt_after_s is not None:
            helpers.append(threading.Thread(target=self._interrupt, args=(generation.interrupt_after_s, done)))
        if generation.watch:
            helpers.append(threading.Thread(target=self._watch, args=(done,)))
        for helper in helpers:
            helper.start()
        kind = "img2img" if generation.img2img else "txt2img"
        try:
            response = self.call("POST", f"/{kind}", f"generation {number} ({kind})", json=generation.body)
        finally:
            done.set()
            for helper in helpers:
                helper.join()
        if response is not None and not response.json().get("info"):
            self.errors.append(f"generation {number} ({kind}): no info in the answer")

    def _interrupt(self, after_s: float, done: threading.Event) -> None:
        if not done.wait(after_s) and self.call("POST", "/interrupt", "interrupt") is not None:
            self.interrupts += 1

    def _watch(self, done: threading.Event) -> None:
        while not done.wait(0.05):
            response = self.call("GET", "/progress", "progress")
            if response is not None and response.json().get("current_image"):
                self.previews_seen += 1

    def set_options(self, what: str, **values) -> None:
        if self.call("POST", "/options", what, json=values) is None:
            return
        response = self.call("GET", "/options", what)
        now = response.json() if response is not None else {}
        # A checkpoint's title gains its " [hash]" once it has been loaded (and hashed).
        if response is not None and any(now.get(key) != value and not str(now.get(key)).startswith(f"{value} [")
                                        for key, value in values.items()):
            self.errors.append(f"{what}: asked for {values}, the options say {({key: now.get(key) for key in values})}")


def _summary(values: list[float], warmup: int) -> dict:
    """MiB after each generation → the baseline after the warm-up, the end, the peak, the growth
    (end minus baseline) and the curve: the value after every ``curve_every``-th generation."""
    every = max(1, len(values) // CURVE_POINTS)
    baseline = values[warmup - 1]
    return {"post_warmup": round(baseline, 1), "end": round(values[-1], 1), "max": round(max(values), 1),
            "growth": round(values[-1] - baseline, 1), "max_growth": round(max(values[warmup:]) - baseline, 1),
            "curve_every": every, "curve": [round(value, 1) for value in values[every - 1::every]]}


def soak(args: argparse.Namespace, root: Path) -> dict:
    started = time.perf_counter()
    server = Server(make_data_dir(root), *(["--nowebui"] if args.api_only else ["--api"]))
    try:
        run = Soak(server)
        samplers = [item["name"] for item in run.client.get("/samplers").json()]
        titles = [item["title"] for item in run.client.get("/sd-models").json()]
        run.set_options("options", live_previews_enable=True, show_progress_every_n_steps=1)
        rng = random.Random(args.seed)
        switch_at = {round((k + 1) * args.generations / (args.switches + 1)) for k in range(args.switches)}
        on_cuda = run.vram_mib() is not None
        rss, vram, checkpoint, switches, vae_switches = [], [], 0, 0, 0
        for number in range(1, args.generations + 1):
            if number in switch_at:
                checkpoint = (checkpoint + 1) % len(titles)
                run.set_options(f"checkpoint switch before generation {number}", sd_model_checkpoint=titles[checkpoint])
                switches += 1
            if rng.random() < 0.05:
                run.set_options(f"VAE switch before generation {number}", sd_vae=rng.choice(VAE_CHOICES),
                                show_progress_type=rng.choice(["Approx cheap", "Full"]))
                vae_switches += 1
            run.generate(number, plan_generation(rng, samplers))
            rss.append(run.rss_mib())
            if on_cuda:
                vram.append(run.vram_mib())
        report = {"bench": "soak", "generations": args.generations, "checkpoint_switches": switches,
                  "vae_switches": vae_switches, "interrupts": run.interrupts, "previews_seen": run.previews_seen,
                  "warmup": args.warmup, "rss_mib": _summary(rss, args.warmup),
                  "threshold_mib": args.threshold_mib}
        if vram and None not in vram:
            report["vram_mib"] = _summary(vram, args.warmup)
        report["passed"] = report["rss_mib"]["growth"] <= args.threshold_mib and not run.errors
        report["errors"] = run.errors[:50]
    finally:
        server.stop()
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", type=int, default=500)
    parser.add_argument("--switches", type=int, default=20, help="checkpoint switches, spread evenly")
    parser.add_argument("--warmup", type=int, default=50, help="generations before the baseline RSS")
    parser.add_argument("--threshold-mib", type=float, default=150.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-only", action="store_true", help="run the server with --nowebui (no Gradio UI)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder (and server.log)")
    args = parser.parse_args()
    if not 0 < args.warmup < args.generations:
        parser.error("--warmup must be between 0 and --generations")
    root = Path(tempfile.mkdtemp(prefix="hanga-soak-"))
    try:
        report = soak(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.keep:
        report["data_dir"] = str(root)
    print(json.dumps(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
