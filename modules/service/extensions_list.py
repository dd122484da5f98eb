"""The installed extension folders, as the API's ``/extensions`` lists them: git facts are read
from the folder's ``.git`` files (no git process is started)."""

from __future__ import annotations

import configparser
from pathlib import Path


def git_facts(folder: Path) -> dict[str, str]:
    git = folder / ".git"
    facts = {"remote": "", "branch": "", "commit_hash": ""}
    if not git.is_dir():
        return facts
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return facts
    if head.startswith("ref: "):
        ref = head[5:]
        facts["branch"] = ref.rsplit("refs/heads/", 1)[-1]
        ref_file = git / ref
        if ref_file.is_file():
            facts["commit_hash"] = ref_file.read_text(encoding="utf-8").strip()
        else:
            packed = git / "packed-refs"
            if packed.is_file():
                for line in packed.read_text(encoding="utf-8").splitlines():
                    if line.endswith(" " + ref):
                        facts["commit_hash"] = line.split()[0]
    else:
        facts["commit_hash"] = head
    config = configparser.ConfigParser(strict=False)
    try:
        config.read(git / "config", encoding="utf-8")
        facts["remote"] = config.get('remote "origin"', "url", fallback="")
    except configparser.Error:
        pass
    return facts


def list_extensions(folders: tuple[Path, ...]) -> list[dict]:
    """One entry per extension folder: name, remote, branch, commit_hash, version, commit_date."""
    found = []
    for parent in folders:
        if not parent.is_dir():
            continue
        for folder in sorted(path for path in parent.iterdir() if path.is_dir() and not path.name.startswith(".")):
            facts = git_facts(folder)
            found.append({"name": folder.name, **facts, "version": facts["commit_hash"][:8],
                          "commit_date": int(folder.stat().st_mtime)})
    return found
