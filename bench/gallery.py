"""The Gallery over many small generated PNGs: first-page time, paging time, search times and
how much the process's RSS grows while paging through every page (thumbnails included).

Writes ``--count`` 64x64 PNGs, each with its own A1111 infotext, into a temporary
``outputs/txt2img-images/<date>/`` tree (1,000 a day), then measures the service in this process:

- first page: a new Gallery indexing the folder and making the page's thumbnails (files in the OS
  cache, thumbnails not made yet), and the same after a restart (thumbnails on disk);
- paging: every page in turn, thumbnails made as they come; RSS sampled after each page;
- search: prompt words (the first search reads every file), seed, model, date range.

``--server`` also starts the real server (``webui.py``) on the same folder and pages through the
Gallery tab in Chromium, sampling the server process's RSS. Prints one JSON object. Usage:

    python bench/gallery.py [--count 5000] [--page-size 36] [--server] [--tiny]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modules.core.paths import Paths  # noqa: E402
from modules.service.gallery import Gallery, GalleryQuery, thumbnails_dir  # noqa: E402
from tests.fixtures.gallery_images import MODELS, image_time, write_outputs  # noqa: E402

MIB = 2**20
PER_DAY = 1000
PAGE_SIZE = 36  # the Gallery tab's (modules.ui.gallery_tab.PAGE_SIZE, which --server uses)


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _first_page(paths: Paths, page_size: int) -> tuple[float, float, float, Gallery]:
    gallery = Gallery.for_paths(paths)
    index_s, page = _timed(lambda: gallery.page(0, page_size))
    thumbs_s, _ = _timed(lambda: gallery.thumbnail_paths(page.entries))
    return index_s + thumbs_s, index_s, thumbs_s, gallery


def measure_service(paths: Paths, count: int, page_size: int) -> dict:
    process = psutil.Process()
    cold_s, index_s, thumbs_s, gallery = _first_page(paths, page_size)
    gc.collect()
    baseline = peak = process.memory_info().rss
    page_times, seen, pages = [], 0, gallery.page(0, page_size).pages
    for number in range(pages):
        elapsed, page = _timed(lambda: gallery.page(number, page_size))
        thumbs_elapsed, _ = _timed(lambda: gallery.thumbnail_paths(page.entries))
        page_times.append(elapsed + thumbs_elapsed)
        seen += len(page.entries)
        peak = max(peak, process.memory_info().rss)
    assert seen == count, (seen, count)
    after = process.memory_info().rss
    unchanged_s, _ = _timed(gallery.refresh)
    forced_s, _ = _timed(lambda: gallery.refresh(force=True))

    middle = count // 2
    day = datetime.date.fromtimestamp(image_time(middle, PER_DAY))
    searches = {
        "text": GalleryQuery(text=f"subject {middle},"),
        "text_warm": GalleryQuery(text="red background"),
        "seed": GalleryQuery(seed=str(1000 + middle)),
        "model": GalleryQuery(model=MODELS[1][0]),
        "model_hash": GalleryQuery(model=MODELS[2][1]),
        "date": GalleryQuery(date_from=day, date_to=day),
    }
    search = {}
    for name, query in searches.items():
        elapsed, page = _timed(lambda: gallery.page(0, page_size, query))
        search[name] = {"s": round(elapsed, 4), "matches": page.total}
    search["text"]["note"] = "first search: reads every file's text chunk"

    warm_s, warm_index_s, warm_thumbs_s, _ = _first_page(paths, page_size)  # a restart: thumbnails on disk
    return {
        "first_page_s": {"cold": round(cold_s, 4), "cold_index": round(index_s, 4), "cold_thumbnails": round(thumbs_s, 4),
                         "after_restart": round(warm_s, 4), "after_restart_index": round(warm_index_s, 4),
                         "after_restart_thumbnails": round(warm_thumbs_s, 4)},
        "page_s": {"median": round(statistics.median(page_times), 4), "max": round(max(page_times), 4),
                   "all_pages_total": round(sum(page_times), 2)},
        "refresh_s": {"unchanged": round(unchanged_s, 5), "forced_restat": round(forced_s, 4)},
        "rss_mib": {"baseline": round(baseline / MIB, 1), "peak": round(peak / MIB, 1), "after": round(after / MIB, 1)},
        "rss_growth_mib": round((peak - baseline) / MIB, 1),
        "search": search,
    }


def measure_server(data: Path, count: int) -> dict:
    """The Gallery tab of the real server in Chromium: first page after opening the tab, then
    ▶ through every page (the tab's page size); the server process's RSS sampled after each page."""
    from playwright.sync_api import sync_playwright

    from modules.ui.gallery_tab import PAGE_SIZE as page_size
    from tests.fixtures.live_server import Server

    server = Server(data)
    try:
        process = psutil.Process(server.process.pid)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                 args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            page = browser.new_page()
            page.goto(server.url)
            page.wait_for_selector("#tab_gallery-button, button:has-text('Gallery')")
            started = process.memory_info().rss
            pages = -(-count // page_size)
            first_s, _ = _timed(lambda: (page.get_by_role("tab", name="Gallery").click(),
                                         _wait_for_page(page, 1, pages, page_size)))
            baseline = peak = process.memory_info().rss
            times = []
            for number in range(2, pages + 1):
                expected = min(page_size, count - (number - 1) * page_size)
                elapsed, _ = _timed(lambda: (page.click("#gallery_next"), _wait_for_page(page, number, pages, expected)))
                times.append(elapsed)
                peak = max(peak, process.memory_info().rss)
            search_s, _ = _timed(lambda: (page.fill("#gallery_seed textarea", str(1000 + count // 3)),
                                          page.click("#gallery_search_button"),
                                          _wait_for_page(page, 1, 1, 1, "1 image")))
            browser.close()
        return {
            "page_size": page_size,
            "first_page_in_browser_s": round(first_s, 3),
            "next_page_in_browser_s": {"median": round(statistics.median(times), 3), "max": round(max(times), 3)},
            "seed_search_in_browser_s": round(search_s, 3),
            "server_rss_mib": {"before_tab": round(started / MIB, 1), "baseline": round(baseline / MIB, 1),
                               "peak": round(peak / MIB, 1)},
            "server_rss_growth_mib": round((peak - baseline) / MIB, 1),
        }
    finally:
        server.stop()


_PAGE_SHOWN = """([count, shown]) => {
    const counter = document.querySelector('#gallery_page_count');
    const images = [...document.querySelectorAll('#gallery_thumbnails img')];
    return counter && counter.innerText.includes(count) && images.length === shown
        && images.every(image => image.complete && image.naturalWidth > 0);
}"""


def _wait_for_page(page, number: int, pages: int, shown: int, count: str = "") -> None:
    """Until the counter says page ``number`` and all ``shown`` thumbnails have loaded (checked on
    every animation frame, so the time is not rounded up to a polling interval)."""
    page.wait_for_function(_PAGE_SHOWN, arg=[count or f"page {number} of {pages}", shown], polling="raf",
                           timeout=60_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE)
    parser.add_argument("--server", action="store_true", help="also page through the real server's tab in Chromium")
    parser.add_argument("--tiny", action="store_true", help="60 images, pages of 12: a quick smoke run")
    args = parser.parse_args()
    if args.tiny:
        args.count, args.page_size = 60, 12
    with tempfile.TemporaryDirectory(prefix="hanga-gallery-bench-") as folder:
        data = Path(folder) / "data"
        paths = Paths.create(data_dir=data)
        write_s, _ = _timed(lambda: write_outputs(paths.outputs, args.count, per_day=PER_DAY))
        report = {
            "bench": "gallery",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "images": args.count, "image_size": "64x64", "page_size": args.page_size,
            "write_images_s": round(write_s, 2),
            **measure_service(paths, args.count, args.page_size),
        }
        for cached in thumbnails_dir(paths).rglob("*.jpg"):  # the server makes its own
            cached.unlink()
        if args.server:
            report["server"] = measure_server(data, args.count)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
