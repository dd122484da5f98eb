"""The pip constraints extension installers run under, so that installing an extension's
requirements cannot change what Hanga runs on: Hanga's pins (``requirements.txt``) exactly, and every
package they pull in at least at its installed version (an installer that asks for an older
``huggingface-hub`` fails instead of breaking Gradio)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from modules.core.atomic import write_text


def pins(requirements: Path) -> dict[str, str]:
    """``requirements.txt``'s requirement lines by package name (options, URLs and comments skipped)."""
    found: dict[str, str] = {}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.url is None:
            requirement.extras = set()  # constraints files may not name extras
            found[canonicalize_name(requirement.name)] = str(requirement)
    return found


def _installed(name: str) -> importlib.metadata.Distribution | None:
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def dependencies(names: list[str]) -> dict[str, str]:
    """Every installed package ``names`` need, directly or not, with its installed version."""
    seen: dict[str, str] = {}
    pending = list(names)
    while pending:
        name = canonicalize_name(pending.pop())
        distribution = _installed(name)
        if name in seen or distribution is None:
            continue
        seen[name] = distribution.version
        for text in distribution.requires or ():
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return seen


def constraints(requirements: Path) -> list[str]:
    pinned = pins(requirements)
    lines = list(pinned.values())
    lines += [f"{name}>={version}" for name, version in sorted(dependencies(list(pinned)).items()) if name not in pinned]
    return lines


def write_constraints(requirements: Path, target: Path) -> Path:
    """The constraints file for pip (``PIP_CONSTRAINT`` / ``--constraint``), rewritten each time."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text(target, "# Hanga's pins: extension installers may not change these\n" + "\n".join(constraints(requirements)) + "\n")
    return target
