"""What extensions add to the page head, in A1111's order: ``opts`` (every setting), Hanga's
``javascript/hanga.js`` (A1111's page helpers), each extension's ``javascript/*.js`` (sorted,
classic scripts) and ``*.mjs`` (modules), then each ``style.css``, then ``<data>/user.css``.
Files are served by the ``/file=`` route (``modules/ui/server.py``)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from modules.core.paths import Paths


def _url(path: Path) -> str:
    return "file=" + html.escape(path.as_posix(), quote=True) + f"?{int(path.stat().st_mtime)}"


def head_html(paths: Paths, extension_dirs: list[Path], settings: dict) -> str:
    data = json.dumps(settings, default=str).replace("</", "<\\/")
    parts = [f"<script>window.opts = {data};</script>"]
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
