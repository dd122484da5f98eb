"""The gallery service: index order and pages, refresh, search filters, lazy infotext, thumbnails,
delete to the trash; the tab's handlers; memory while paging through 5,000 images; the bench."""

from __future__ import annotations

import datetime
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import gradio as gr
import psutil
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules.core.png_meta import read_infotext, user_comment_exif
from modules.core.png_text import read_file_infotext
from modules.service import gallery as gallery_module
from modules.service.gallery import Gallery, GalleryError, GalleryQuery
from modules.service.thumbnails import ThumbnailCache
from modules.ui import gallery_tab
from tests.fixtures.gallery_images import BASE_TIME, MODELS, image_time, infotext, write_outputs, write_png

ROOT = Path(__file__).resolve().parents[1]


def make_gallery(tmp_path: Path, **options) -> Gallery:
    return Gallery(tmp_path / "outputs", ThumbnailCache(tmp_path / "cache" / "thumbnails"), **options)


def names(page) -> list[str]:
    return [entry.path.name for entry in page.entries]


@pytest.fixture
def outputs(tmp_path):
    """Ten images over three days (4, 4, 2), the newest last."""
    write_outputs(tmp_path / "outputs", 10, per_day=4)
    return tmp_path / "outputs"


# ------------------------------------------------------------------------------ index and pages

def test_pages_are_newest_first_and_clamped(tmp_path, outputs):
    gallery = make_gallery(tmp_path)
    first = gallery.page(0, 4)
    assert first.total == 10 and first.pages == 3 and first.number == 0
    assert names(first) == [f"{i:05d}-{1000 + i}-a photo of subject {i}.png" for i in (9, 8, 7, 6)]
    assert [entry.path.name[:5] for entry in gallery.page(2, 4).entries] == ["00001", "00000"]
    beyond = gallery.page(99, 4)
    assert beyond.number == 2 and len(beyond.entries) == 2
    assert gallery.page(-3, 4).number == 0
    entry = first.entries[0]
    assert entry.relpath == f"txt2img-images/{datetime.date.fromtimestamp(image_time(9, 4))}/{entry.path.name}"
    assert entry.path == outputs / entry.relpath and entry.size == entry.path.stat().st_size
    assert gallery.entry(entry.relpath) == entry and gallery.entry("nope/none.png") is None


def test_equal_mtimes_fall_back_to_the_name_newest_first(tmp_path):
    for name in ("00001-a.png", "00003-c.png", "00002-b.png"):
        write_png(tmp_path / "outputs" / "day" / name, "x", mtime=BASE_TIME)
    assert names(make_gallery(tmp_path).page(0, 10)) == ["00003-c.png", "00002-b.png", "00001-a.png"]


def test_only_images_outside_hidden_folders_are_indexed(tmp_path, outputs):
    write_png(outputs / ".trash" / "old.png", "x")
    write_png(outputs / "day" / ".tmp-half.png", "x")
    (outputs / "day" / "notes.txt").write_text("not an image")
    (outputs / "day" / "anim.gif").write_bytes(b"GIF89a")
    Image.new("RGB", (8, 8)).save(outputs / "day" / "photo.JPG")
    Image.new("RGB", (8, 8)).save(outputs / "day" / "photo.webp")
    (outputs / "loop").symlink_to(outputs, target_is_directory=True)  # never followed
    gallery = make_gallery(tmp_path)
    everything = names(gallery.page(0, 100))
    assert len(everything) == 12 and {"photo.JPG", "photo.webp"} <= set(everything)


def test_no_outputs_folder_is_an_empty_gallery(tmp_path):
    page = make_gallery(tmp_path).page(0, 10)
    assert page.total == 0 and page.entries == () and page.pages == 1


def test_refresh_finds_new_and_removed_files_and_folders(tmp_path, outputs):
    gallery = make_gallery(tmp_path)
    assert gallery.page(0, 5).total == 10
    assert gallery.refresh() is False  # nothing changed
    newest = write_png(outputs / "img2img-images" / "2030-01-01" / "new.png", "x", mtime=BASE_TIME + 10 * 86400)
    first = gallery.page(0, 5)
    assert first.total == 11 and first.entries[0].path == newest
    newest.unlink()
    next(outputs.glob("txt2img-images/*/00000-*.png")).unlink()
    assert gallery.page(0, 5).total == 9
    # A file rewritten in place keeps its folder's mtime: a forced refresh re-stats files.
    target = gallery.page(0, 1).entries[0]
    write_png(target.path, "changed", mtime=BASE_TIME + 20 * 86400, size=32)
    gallery.refresh(force=True)
    changed = gallery.entry(target.relpath)
    assert changed.mtime_ns != target.mtime_ns and changed.size != target.size


def test_unchanged_folders_are_not_listed_again(tmp_path, outputs, monkeypatch):
    gallery = make_gallery(tmp_path)
    gallery.refresh()
    past = BASE_TIME
    for folder in [outputs, *(path for path in outputs.rglob("*") if path.is_dir())]:
        os.utime(folder, (past, past))  # settled folders (not "racy")
    gallery.refresh(force=True)
    scanned = []
    real_scan = gallery._scan
    monkeypatch.setattr(gallery, "_scan", lambda rel, *rest: scanned.append(rel) or real_scan(rel, *rest))
    assert gallery.refresh() is False and scanned == []
    write_png(outputs / "txt2img-images" / "added.png", "x")
    assert gallery.refresh() is True and scanned == ["txt2img-images"]


# ------------------------------------------------------------------------------------- search

@pytest.mark.parametrize(("query", "expected"), [
    (GalleryQuery(text="subject 7"), [7]),
    (GalleryQuery(text="RED background"), [9, 7, 5, 3, 1]),
    (GalleryQuery(text="lowres 4"), [4]),  # the negative prompt
    (GalleryQuery(text="subject purple"), []),  # every word must match
    (GalleryQuery(model=MODELS[1][0].upper()), [7, 4, 1]),
    (GalleryQuery(model="dreamy"), [7, 4, 1]),
    (GalleryQuery(model=MODELS[2][1]), [8, 5, 2]),
    (GalleryQuery(model=MODELS[2][1][:6]), [8, 5, 2]),  # a hash prefix
    (GalleryQuery(seed="1003"), [3]),
    (GalleryQuery(seed=" 1003.0 "), [3]),
    (GalleryQuery(seed="100"), []),  # a seed is matched whole
    (GalleryQuery(text="red", model="tiny-sd1"), [9, 3]),
])
def test_search_by_prompt_model_and_seed(tmp_path, outputs, query, expected):
    page = make_gallery(tmp_path).page(0, 100, query)
    assert [int(name[:5]) for name in names(page)] == expected and page.total == len(expected)


def test_search_by_date_needs_no_file_reads(tmp_path, outputs, monkeypatch):
    gallery = make_gallery(tmp_path)
    monkeypatch.setattr(gallery_module, "read_file_infotext", lambda path: pytest.fail("read a file"))
    second_day = datetime.date.fromtimestamp(image_time(4, 4))
    assert [n[:5] for n in names(gallery.page(0, 100, GalleryQuery(date_from=second_day, date_to=second_day)))] == \
        ["00007", "00006", "00005", "00004"]
    assert gallery.page(0, 100, GalleryQuery(date_from=second_day)).total == 6
    assert gallery.page(0, 100, GalleryQuery(date_to=second_day)).total == 8
    assert gallery.page(0, 100, GalleryQuery(date_from=second_day + datetime.timedelta(days=9))).total == 0


def test_search_results_page_and_images_without_infotext_only_match_dates(tmp_path, outputs):
    write_png(outputs / "extras-images" / "upscaled.png", None, mtime=BASE_TIME + 5 * 86400)
    gallery = make_gallery(tmp_path)
    query = GalleryQuery(text="background")
    pages = [gallery.page(number, 3, query) for number in range(4)]
    assert [p.total for p in pages] == [10] * 4 and pages[3].number == 3
    assert sum(len(p.entries) for p in pages) == 10
    assert gallery.page(0, 100, GalleryQuery(date_from=datetime.date.fromtimestamp(BASE_TIME + 5 * 86400))).total == 1


def test_a_new_image_shows_in_a_repeated_search(tmp_path, outputs):
    gallery = make_gallery(tmp_path)
    query = GalleryQuery(seed="5555")
    assert gallery.page(0, 10, query).total == 0
    write_png(outputs / "later.png", infotext(4555), mtime=BASE_TIME + 9 * 86400)
    assert names(gallery.page(0, 10, query)) == ["later.png"]


# ---------------------------------------------------------------------------------- infotext

def test_infotext_is_read_lazily_and_cached_in_a_bounded_lru(tmp_path, outputs, monkeypatch):
    reads = []
    monkeypatch.setattr(gallery_module, "read_file_infotext", lambda path: reads.append(path) or read_file_infotext(path))
    gallery = make_gallery(tmp_path, infotext_entries=3)
    entries = gallery.page(0, 100).entries
    assert reads == []  # a page never opens its images
    assert gallery.infotext(entries[0]) == infotext(9) and len(reads) == 1
    assert gallery.infotext(entries[0]) == infotext(9) and len(reads) == 1  # cached
    for entry in entries[1:5]:
        gallery.infotext(entry)
    assert len(gallery._infotexts) == 3
    gallery.infotext(entries[0])
    assert len(reads) == 6  # evicted, read again
    params = gallery.parameters(entries[0])
    assert params["Seed"] == "1009" and params["Prompt"].startswith("a photo of subject 9")
    assert params["Model"] == MODELS[0][0]


def test_infotext_cache_is_bounded_by_text_size(tmp_path, outputs):
    gallery = make_gallery(tmp_path, infotext_chars=2 * (64 + len(infotext(8))))  # "blue": the longest
    for entry in gallery.page(0, 100).entries:
        gallery.infotext(entry)
    assert len(gallery._infotexts) == 2


def _png_with_chunks(path: Path, info: PngInfo, exif: bytes | None = None) -> Path:
    Image.new("RGB", (16, 16)).save(path, pnginfo=info, **({"exif": exif} if exif else {}))
    return path


def test_png_text_reader_agrees_with_pil(tmp_path):
    cases = []
    info = PngInfo()
    info.add_text("other", "x")
    info.add_text("parameters", "latin é\nSteps: 1, Seed: 2, Size: 8x8")
    cases.append(_png_with_chunks(tmp_path / "text.png", info))
    info = PngInfo()
    info.add_itxt("parameters", "日本語の猫\nSteps: 1, Seed: 2, Size: 8x8", zip=True)
    cases.append(_png_with_chunks(tmp_path / "itxt.png", info))
    info = PngInfo()
    info.add_text("parameters", "compressed " * 50, zip=True)
    cases.append(_png_with_chunks(tmp_path / "ztxt.png", info))
    info = PngInfo()
    info.add_text("parameters", "from the chunk")
    cases.append(_png_with_chunks(tmp_path / "exif.png", info, user_comment_exif("from EXIF wins")))
    cases.append(_png_with_chunks(tmp_path / "none.png", PngInfo()))
    Image.new("RGB", (16, 16)).save(tmp_path / "photo.jpg", exif=user_comment_exif("jpeg infotext"))
    cases.append(tmp_path / "photo.jpg")
    for path in cases:
        with Image.open(path) as image:
            assert read_file_infotext(path) == read_infotext(image)[0], path.name
    assert read_file_infotext(tmp_path / "exif.png") == "from EXIF wins"
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((tmp_path / "text.png").read_bytes()[:40])
    (tmp_path / "garbage.png").write_bytes(b"not a png at all")
    assert read_file_infotext(truncated) is None and read_file_infotext(tmp_path / "garbage.png") is None
    assert read_file_infotext(tmp_path / "missing.png") is None


# -------------------------------------------------------------------------------- thumbnails

def test_thumbnails_are_small_cached_and_follow_the_file(tmp_path, monkeypatch):
    source = write_png(tmp_path / "outputs" / "big.png", "x", size=600)
    cache = ThumbnailCache(tmp_path / "thumbs", size=128)
    made = []
    real = cache._thumbnail_of
    monkeypatch.setattr(cache, "_thumbnail_of", lambda path: made.append(path) or real(path))
    stat = source.stat()
    thumb = cache.get(source, stat.st_mtime_ns, stat.st_size)
    assert thumb.parent.parent == tmp_path / "thumbs"
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and max(image.size) == 128
    assert cache.get(source, stat.st_mtime_ns, stat.st_size) == thumb and len(made) == 1
    write_png(source, "y", mtime=stat.st_mtime + 10, size=300)
    changed = source.stat()
    assert cache.get(source, changed.st_mtime_ns, changed.st_size) != thumb and len(made) == 2
    thumb.write_bytes(b"")  # what a crash after an unsynced write can leave
    assert cache.get(source, stat.st_mtime_ns, stat.st_size) == thumb and thumb.stat().st_size > 0


def test_thumbnail_cache_is_an_lru_bounded_on_disk(tmp_path):
    sources = [write_png(tmp_path / "outputs" / f"{i}.png", "x") for i in range(12)]
    cache = ThumbnailCache(tmp_path / "thumbs", max_files=5)
    stats = [source.stat() for source in sources]
    made = []
    for index, (source, stat) in enumerate(zip(sources, stats)):
        made.append(cache.get(source, stat.st_mtime_ns, stat.st_size))
        os.utime(made[-1], (BASE_TIME + index, BASE_TIME + index))
        if index >= 1:
            cache.get(sources[0], stats[0].st_mtime_ns, stats[0].st_size)  # keeps the first one in use
            os.utime(made[0], (BASE_TIME + index + 0.5, BASE_TIME + index + 0.5))
    kept = list((tmp_path / "thumbs").rglob("*.jpg"))
    assert len(kept) <= 5 and made[0] in kept and made[-1] in kept and made[1] not in kept


def test_thumbnail_byte_budget_and_unreadable_images(tmp_path):
    sources = [write_png(tmp_path / "outputs" / f"{i}.png", "x", color=(i * 20, 0, 0)) for i in range(6)]
    cache = ThumbnailCache(tmp_path / "thumbs", max_bytes=1)
    for source in sources:
        stat = source.stat()
        cache.get(source, stat.st_mtime_ns, stat.st_size)
    assert len(list((tmp_path / "thumbs").rglob("*.jpg"))) <= 1
    transparent = tmp_path / "outputs" / "alpha.png"
    Image.new("RGBA", (300, 100), (255, 0, 0, 0)).save(transparent)
    with Image.open(cache.get(transparent, 1, 1)) as thumb:
        assert thumb.mode == "RGB" and thumb.size == (256, 85) and thumb.getpixel((5, 5)) == pytest.approx((96, 96, 96), abs=3)
    broken = tmp_path / "outputs" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnonsense")
    placeholder = cache.get(broken, 1, 2)
    assert placeholder.name == "broken.jpg" and placeholder.stat().st_size > 0


def test_a_page_of_thumbnails(tmp_path, outputs):
    gallery = make_gallery(tmp_path)
    page = gallery.page(0, 6)
    thumbs = gallery.thumbnail_paths(page.entries)
    assert len(set(thumbs)) == 6 and all(path.is_file() for path in thumbs)
    assert thumbs == gallery.thumbnail_paths(page.entries)


# ------------------------------------------------------------------------------------ delete

def test_delete_moves_the_image_and_its_txt_into_the_trash(tmp_path, outputs):
    gallery = make_gallery(tmp_path)
    newest = gallery.page(0, 1).entries[0]
    newest.path.with_suffix(".txt").write_text(infotext(9))
    thumb = gallery.thumbnail(newest)
    target = gallery.delete(newest.relpath)
    assert target == outputs / ".trash" / newest.relpath and target.is_file()
    assert target.with_suffix(".txt").read_text() == infotext(9)
    assert not newest.path.exists() and not newest.path.with_suffix(".txt").exists() and not thumb.exists()
    assert gallery.entry(newest.relpath) is None and gallery.page(0, 100).total == 9
    gallery.refresh(force=True)
    assert gallery.page(0, 100).total == 9  # the trash is never indexed
    write_png(newest.path, "again")
    gallery.refresh()
    second = gallery.delete(newest.relpath)
    assert second.name == newest.path.stem + " (2).png" and target.is_file()


def test_delete_refuses_anything_but_an_image_under_outputs(tmp_path, outputs):
    gallery = make_gallery(tmp_path)
    outside = write_png(tmp_path / "elsewhere" / "secret.png", "x")
    (outputs / "link.png").symlink_to(outside)
    write_png(outputs / ".trash" / "gone.png", "x")
    (outputs / "note.txt").write_text("x")
    refused = ["../elsewhere/secret.png", str(outside), "link.png", ".trash/gone.png", "note.txt", "txt2img-images",
               "missing.png", "", "txt2img-images/../../elsewhere/secret.png", "bad\0name.png"]
    for relpath in refused:
        with pytest.raises(GalleryError):
            gallery.delete(relpath)
    assert outside.is_file() and (outputs / ".trash" / "gone.png").is_file() and (outputs / "note.txt").is_file()
    inside = next(outputs.glob("txt2img-images/*/00003-*.png"))
    assert gallery.delete(str(inside)).is_file()  # an absolute path inside outputs is fine


# ------------------------------------------------------------------------------------ the tab

def test_tab_handlers_list_pages_and_selection(tmp_path, outputs):
    gallery = make_gallery(tmp_path)
    items, number, count, shown_all = gallery_tab.page_outputs(gallery, 1, gallery_tab.query_of("", "", "", "", ""))
    assert number == 1 and count == "10 images · page 1 of 1" and len(items) == len(shown_all) == 10
    assert Path(items[0][0]).is_file() and items[0][1].startswith("00009-")
    items, number, count, shown = gallery_tab.page_outputs(gallery, 7, gallery_tab.query_of("", "", "1004", "", ""))
    assert (number, count, len(items)) == (1, "1 image · page 1 of 1", 1)
    assert gallery_tab.page_outputs(gallery, 1, GalleryQuery(seed="1"))[2] == "No image matches the search"
    urls = gallery_tab.page_outputs(gallery, 1, GalleryQuery(), origin="http://host:7860")[0]
    assert urls[0][0] == f"http://host:7860/gradio_api/file={gallery.thumbnail(gallery.entry(shown_all[0]))}"
    assert gallery_tab.thumbnail_url("https://h", "/a b/c.jpg") == "https://h/gradio_api/file=/a%20b/c.jpg"
    picture, name, info, text, relpath = gallery_tab.selection_outputs(gallery, gallery.entry(shown[0]))
    assert picture == str(outputs / shown[0]) and text == infotext(4) and "Seed: 1004" in info and relpath == shown[0]
    assert gallery_tab.selection_outputs(gallery, None) == (None, "", "", "", "")
    with pytest.raises(gr.Error):
        gallery_tab.query_of("", "", "", "March", "")
    assert gallery_tab.query_of("", "", "", "2024-03-02", "").date_from == datetime.date(2024, 3, 2)


# -------------------------------------------------------------------------- 5,000 images, memory

def test_paging_through_5000_images_keeps_memory_flat(tmp_path):
    """Behaviour, not speed: browsing every page, thumbnails included, grows RSS by < 100 MB."""
    write_outputs(tmp_path / "outputs", 5000, per_day=1000)
    gallery = make_gallery(tmp_path)
    first = gallery.page(0, gallery_tab.PAGE_SIZE)
    gallery.thumbnail_paths(first.entries)
    gc.collect()
    process = psutil.Process()
    baseline = peak = process.memory_info().rss
    seen = 0
    for number in range(first.pages):
        page = gallery.page(number, gallery_tab.PAGE_SIZE)
        assert len(gallery.thumbnail_paths(page.entries)) == len(page.entries)
        seen += len(page.entries)
        peak = max(peak, process.memory_info().rss)
    growth = (peak - baseline) / 2**20
    print(f"RSS growth paging 5,000 images: {growth:.1f} MiB")
    assert seen == 5000 and first.total == 5000
    assert growth < 100
    assert gallery.page(0, 48, GalleryQuery(seed="4321")).total == 1


def test_bench_runs_in_tiny_mode():
    out = subprocess.run([sys.executable, "bench/gallery.py", "--tiny"], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=300).stdout
    report = json.loads(out)
    assert report["bench"] == "gallery" and report["images"] > 0
    assert report["first_page_s"]["cold"] > 0 and report["rss_growth_mib"] < 100
    assert report["search"]["seed"]["matches"] == 1
