"""What extensions add to the page head, in A1111's order: ``opts`` (every setting), Hanga's
``javascript/hanga.js`` (A1111's page helpers), each extension's ``javascript/*.js`` (sorted,
classic scripts) and ``*.mjs`` (modules), then each ``style.css``, then ``<data>/user.css``.
Files are served by the ``/file=`` route (``modules/ui/server.py``)."""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

from modules.core.paths import Paths

log = logging.getLogger("hanga")


def _url(path: Path) -> str:
    return "file=" + html.escape(path.as_posix(), quote=True) + f"?{int(path.stat().st_mtime)}"


def localizations(paths: Paths, extension_dirs: list[Path]) -> dict[str, Path]:
    """``localizations/*.json`` of ``<data>`` and of the extensions, by file name (later wins)."""
    found: dict[str, Path] = {}
    for folder in (paths.data, *extension_dirs):
        directory = folder / "localizations"
        if directory.is_dir():
            found.update({path.stem: path for path in sorted(directory.glob("*.json"))})
    return found


def _localization(paths: Paths, extension_dirs: list[Path], name: str) -> dict:
    path = localizations(paths, extension_dirs).get(name)
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log.warning("Localization %s ignored: %s", path, error)
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def head_html(paths: Paths, extension_dirs: list[Path], settings: dict) -> str:
    data = json.dumps(settings, default=str).replace("</", "<\\/")
    translated = json.dumps(_localization(paths, extension_dirs, settings.get("localization") or "None"))
    translated = translated.replace("</", "<\\/")
    parts = [f"<script>window.localization = {translated};</script>", f"<script>window.opts = {data};</script>"]
    own = paths.install / "javascript"
    scripts = sorted(own.glob("*.js")) if own.is_dir() else []
    modules: list[Path] = []
    styles: list[Path] = []
    for folder in extension_dirs:
        javascript = folder / "javascript"
        if javascript.is_dir():
            scripts += sorted(javascript.glob("*.js"))
            modules += sorted(javascript.glob("*.mjs"))
        if (folder / "style.css").is_file():
            styles.append(folder / "style.css")
    user_css = paths.data / "user.css"
    if user_css.is_file():
        styles.append(user_css)
    parts += [f'<script type="text/javascript" src="{_url(path)}"></script>' for path in scripts]
    parts += [f'<script type="module" src="{_url(path)}"></script>' for path in modules]
    parts += [f'<link rel="stylesheet" property="stylesheet" href="{_url(path)}">' for path in styles]
    return "\n".join(parts)


def servable_roots(paths: Paths, extension_dirs: list[Path]) -> list[Path]:
    """Folders whose files ``/file=`` may serve: the extensions', Hanga's own page assets and
    ``tmp`` (relative ``file=`` paths resolve against the install folder), and ``user.css``."""
    return [*extension_dirs, paths.install / "javascript", paths.install / "html", paths.install / "tmp",
            paths.data / "user.css"]
