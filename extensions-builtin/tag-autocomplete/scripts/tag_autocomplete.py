"""Built-in tag autocomplete: its settings (section "Tag Autocomplete", A1111-TAC's keys where TAC
has one, so a config.json brought from A1111 keeps its choices) and the routes its page script reads.

Tag lists are A1111-TAC CSV files (``tag,type,count,"alias1,alias2"``) in ``models/tags/`` (also
read from an ``extensions/a1111-sd-webui-tagcomplete/tags/`` folder). When the A1111 extension
itself is installed and enabled, this one registers nothing and its page script stays idle, so
there are never two popups."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gradio as gr
from fastapi import HTTPException
from fastapi.responses import FileResponse

from modules import script_callbacks, shared
from modules.service.extensions import context

log = logging.getLogger("hanga")

SECTION = ("tac", "Tag Autocomplete")
A1111_TAC_FOLDER = "a1111-sd-webui-tagcomplete"
NO_FILE = "None"
MAX_WILDCARDS = 5000
MAX_ENTRIES_WALKED = 100_000

# key → (default, label, component, component args): A1111-TAC's keys and defaults, and two of ours
# (tac_showCounts, tac_wildcardFolder). tac_tagFile is registered apart: its choices are the files.
OPTIONS = {
    "tac_active": (True, "Enable tag autocomplete in the prompt boxes", None, None),
    "tac_maxResults": (5, "Maximum results", gr.Slider, {"minimum": 1, "maximum": 100, "step": 1}),
    "tac_replaceUnderscores": (True, "Replace underscores with spaces on insertion", None, None),
    "tac_escapeParentheses": (True, "Escape brackets, ( ) → \\( \\) and [ ] → \\[ \\], on insertion", None, None),
    "tac_appendComma": (True, "Append a comma after an inserted tag", None, None),
    "tac_alias.searchByAlias": (True, "Search by alias (shown as alias → tag)", None, None),
    "tac_showCounts": (True, "Show post counts", None, None),
    "tac_wildcardFolder": ("wildcards", "Wildcard folder for __name__ completion (relative to the data folder; "
                                        "every extensions/*/wildcards folder is read too)", None, None),
}


def _paths():
    paths = context.current().paths
    if paths is None:
        raise RuntimeError("the tag autocomplete extension is used before Hanga has started")
    return paths


def tag_folders() -> list[Path]:
    """Where tag files are looked for, in order (the first file of a name wins)."""
    paths = _paths()
    return [paths.models / "tags", paths.extension_dirs[0] / A1111_TAC_FOLDER / "tags"]


def tag_files() -> dict[str, Path]:
    """``*.csv`` in the tag folders, by file name."""
    found: dict[str, Path] = {}
    for folder in tag_folders():
        if folder.is_dir():
            for path in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
                if path.is_file() and path.suffix.lower() == ".csv" and not path.name.startswith("."):
                    found.setdefault(path.name, path)
    return found


def default_tag_file(names: list[str]) -> str:
    if "danbooru.csv" in names:
        return "danbooru.csv"
    return names[0] if names else NO_FILE


def a1111_tac_active() -> bool:
    """Whether A1111's own tag autocomplete extension is loaded (then this one stays out of its way)."""
    service = context.current().service
    host = getattr(service, "extensions", None)
    if host is None:
        return False
    here = Path(__file__).resolve().parents[1]
    return any((e.path / "javascript" / "tagAutocomplete.js").is_file() for e in host.active if e.path.resolve() != here)


def register_settings() -> None:
    if a1111_tac_active():
        log.info("Tag autocomplete: A1111's tag autocomplete extension is installed; the built-in one stays off")
        return
    try:
        (_paths().models / "tags").mkdir(parents=True, exist_ok=True)  # so a user finds where the files go
    except OSError:
        pass
    shared.opts.add_option("tac_tagFile", shared.OptionInfo(
        default_tag_file(list(tag_files())), "Tag file (a CSV file in models/tags)", gr.Dropdown,
        lambda: {"choices": [NO_FILE, *tag_files()]}, refresh=tag_files, section=SECTION))
    for key, (default, label, component, args) in OPTIONS.items():
        shared.opts.add_option(key, shared.OptionInfo(default, label, component, args, section=SECTION))


def current_settings() -> dict:
    return {key: getattr(shared.opts, key) for key in ("tac_tagFile", *OPTIONS)} | {
        "extra_networks_default_multiplier": shared.opts.extra_networks_default_multiplier}


def wildcard_folders() -> list[Path]:
    paths = _paths()
    configured = Path(str(shared.opts.tac_wildcardFolder or "wildcards")).expanduser()
    folders = [configured if configured.is_absolute() else paths.data / configured]
    user_extensions = paths.extension_dirs[0]
    if user_extensions.is_dir():
        folders += sorted(p / "wildcards" for p in user_extensions.iterdir() if (p / "wildcards").is_dir())
    return folders


def wildcard_names() -> list[str]:
    """``__name__`` names: each ``*.txt`` under a wildcard folder, relative, without ``.txt``. The
    walk is bounded: a folder setting pointed at a whole disk must not stall the page."""
    names: set[str] = set()
    budget = MAX_ENTRIES_WALKED
    for folder in wildcard_folders():
        for parent, folders, files in os.walk(folder):
            budget -= len(folders) + len(files)
            if budget < 0 or len(names) >= MAX_WILDCARDS:
                break
            folders.sort()
            base = Path(parent).relative_to(folder)
            names.update((base / name[:-4]).as_posix() for name in files if name.lower().endswith(".txt"))
    return sorted(names, key=str.lower)[:MAX_WILDCARDS]


def embedding_names(service) -> list[str]:
    """Every embedding's name: those the loaded model can use and those of another width."""
    loaded = service.models.loaded
    usable = service.embeddings.for_width(loaded.model.text_width if loaded is not None else 768)
    return sorted({ti.name for ti in usable} | set(service.embeddings.skipped), key=str.lower)


def extra_names() -> dict:
    service = context.current().service
    loras = []
    for name, path in service.loras.files().items():
        try:
            alias = service.loras.metadata(path).get("ss_output_name") or ""
        except Exception:  # noqa: BLE001 - a damaged file still gets its name completed
            alias = ""
        loras.append({"name": name, "alias": alias if alias != name else ""})
    return {
        "embeddings": embedding_names(service),
        "loras": sorted(loras, key=lambda item: item["name"].lower()),
        "hypernetworks": sorted(service.hypernetworks.names(), key=str.lower),
        "wildcards": wildcard_names(),
    }


def add_routes(demo, app) -> None:
    if a1111_tac_active():
        return

    def list_tag_files() -> dict:
        return {"files": list(tag_files()), "selected": shared.opts.tac_tagFile}

    def serve_tag_file(name: str):
        path = tag_files().get(name)  # only a listed file name: no folders, no "..", nothing else
        if path is None:
            raise HTTPException(404, f"no tag file {name!r} in the tag folders")
        return FileResponse(path, media_type="text/csv; charset=utf-8", headers={"Cache-Control": "no-cache"})

    app.add_api_route("/tacapi/v1/tag-files", list_tag_files, methods=["GET"], include_in_schema=False)
    app.add_api_route("/tacapi/v1/tags/{name:path}", serve_tag_file, methods=["GET"], include_in_schema=False)
    app.add_api_route("/tacapi/v1/extra-names", extra_names, methods=["GET"], include_in_schema=False)
    app.add_api_route("/tacapi/v1/settings", current_settings, methods=["GET"], include_in_schema=False)


script_callbacks.on_ui_settings(register_settings)
script_callbacks.on_app_started(add_routes)
