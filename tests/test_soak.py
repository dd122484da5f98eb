"""The soak harness runs a short mix end to end against the real server (the full run, 500
generations and 20 checkpoint switches, is ``python bench/soak.py``: about 15 minutes on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_short_soak_passes_and_reports_the_rss_curve():
    run = subprocess.run([sys.executable, "bench/soak.py", "--generations", "30", "--switches", "3", "--warmup", "10"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.stdout.strip(), run.stderr[-4000:]
    report = json.loads(run.stdout)
    assert report["errors"] == [] and report["passed"] and run.returncode == 0, report
    assert report["bench"] == "soak" and report["generations"] == 30 and report["checkpoint_switches"] == 3
    assert report["warmup"] == 10 and report["threshold_mib"] == 150
    rss = report["rss_mib"]
    assert len(rss["curve"]) == 30 and rss["curve_every"] == 1
    assert abs(rss["growth"] - (rss["end"] - rss["post_warmup"])) <= 0.11  # each rounded to 0.1 MiB
    assert rss["max"] >= rss["end"] > 0 and rss["growth"] <= 150
    assert report["seconds"] > 0
