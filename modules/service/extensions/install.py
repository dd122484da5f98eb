"""Install an extension from a git URL: clone into ``<data>/tmp``, move into ``extensions/``,
run its ``install.py``. It takes effect at the next start (Apply and restart UI)."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

from modules.core.generation.request import InvalidRequest
from modules.service.extensions.discovery import Extension

ALLOWED_SCHEMES = ("https", "http", "ssh", "git", "file")


def folder_name(url: str) -> str:
    """A1111's default: the last path component of the URL without ``.git``."""
    last = urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"\.git$", "", last)
    return re.sub(r"[^\w.-]", "_", name)


def install_from_url(url: str, extensions_dir: Path, tmp_dir: Path, installed: list[Extension],
                     dirname: str = "", branch: str = "", timeout: float = 600) -> Path:
    url = url.strip()
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ALLOWED_SCHEMES:
        raise InvalidRequest("url", f"must be a git URL ({', '.join(ALLOWED_SCHEMES)}); got {url!r}")
    name = (dirname.strip() or folder_name(url))
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise InvalidRequest("dirname", f"not a usable folder name: {name!r}")
    target = extensions_dir / name
    if target.exists():
        raise InvalidRequest("dirname", f"extension folder {name!r} already exists")
    normalized = url.rstrip("/").removesuffix(".git")
    for extension in installed:
        if extension.remote and extension.remote.rstrip("/").removesuffix(".git") == normalized:
            raise InvalidRequest("url", f"this extension is already installed as {extension.name!r}")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    staging = tmp_dir / f"install-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    command = ["git", "clone", "--filter=blob:none", *(["--branch", branch] if branch else []), "--", url, str(staging)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InvalidRequest("url", f"git clone failed: {error}") from None
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise InvalidRequest("url", f"git clone failed: {(done.stderr or done.stdout).strip()[-1000:]}")
    extensions_dir.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    return target


def _git(folder: Path, *args: str, timeout: float = 120) -> str:
    done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError((done.stderr or done.stdout).strip()[-500:] or f"git {args[0]} failed")
    return done.stdout.strip()


def check_for_update(extension: Extension) -> str:
    """``"behind"`` when its remote branch has commits the folder lacks (after a ``git fetch``),
    ``"latest"`` when not, ``"unknown: <why>"`` for a folder without a usable remote."""
    if not (extension.path / ".git").exists() or not extension.remote:
        return "unknown: not a git clone"
    try:
        _git(extension.path, "fetch", "--quiet")
        behind = int(_git(extension.path, "rev-list", "--count", "HEAD..@{u}") or 0)
    except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
        return f"unknown: {error}"
    return "behind" if behind else "latest"


def update(extension: Extension) -> str:
    """Fast-forward the folder to its remote branch; the new commit hash."""
    _git(extension.path, "pull", "--ff-only", "--quiet")
    return _git(extension.path, "rev-parse", "HEAD")
