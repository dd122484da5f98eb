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
    # hanga.js moves these after the page's own CSS (Gradio adds that later), so extensions' rules win ties.
    parts += [f'<link rel="stylesheet" property="stylesheet" data-hanga-style href="{_url(path)}">' for path in styles]
    return "\n".join(parts)


# Files under the install folder ``/file=`` never serves: they can hold passwords (COMMANDLINE_ARGS
# with --gradio-auth, extensions' API keys in config.json).
PRIVATE_NAMES = ("webui-user.sh", "webui-user.bat", "webui-user.local.sh", "config.json")


def servable_roots(paths: Paths, extension_dirs: list[Path], allowed: list[str] | None = None) -> list[Path]:
    """What ``/file=`` may serve, A1111's scope: the install folder (relative ``file=`` paths resolve
    against it: ``tmp/…``, ``html/…``), the extension folders, ``--gradio-allowed-path`` folders and
    ``<data>/user.css``."""
    return [paths.install, *extension_dirs, *(Path(folder).expanduser() for folder in allowed or ()),
            paths.data / "user.css"]


def servable(target: Path, roots: list[Path], private: list[Path]) -> bool:
    """Whether ``/file=`` serves ``target`` (resolved): a file under one of ``roots`` (resolved),
    with no part of its path below that root hidden (``.git``, ``.env``), not a private file."""
    if not target.is_file() or target in private or target.name.lower().startswith(PRIVATE_NAMES):
        return False
    for root in roots:
        if target == root or target.is_relative_to(root):
            inside = target.relative_to(root).parts if target != root else (target.name,)
            if not any(part.startswith(".") for part in inside):
                return True
    return False
