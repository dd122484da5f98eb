"""The GPU benchmark script runs every code path on the CPU with the tiny fixtures (its numbers
mean nothing there; the point is that it works when a GPU is lent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_tiers_bench_runs_in_tiny_mode():
    out = subprocess.run([sys.executable, "bench/gpu_tiers.py", "--tiny", "--device", "cpu", "--models", "sd15,sdxl",
                          "--skip-fast-path"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=900).stdout
    report = json.loads(out)
    assert report["bench"] == "gpu_tiers" and set(report["models"]) == {"sd15", "sdxl"}
    sd15 = report["models"]["sd15"]
    assert sd15["diffusers"]["all_on_gpu"]["it_s"] > 0
    hanga = sd15["hanga"]
    assert {"default", "medvram", "lowvram"} <= set(hanga)
    assert hanga["default"]["it_s_batch1"] > 0 and hanga["default"]["it_s_batch8"] > 0
    assert "vae_decode_128_tiled_s" in hanga["default"] and "txt2img_128x72_peak_gib" in hanga["medvram"]
    assert "default_vs_diffusers_eager_speed" in sd15["ratios"]
