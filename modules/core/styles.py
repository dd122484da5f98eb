"""Prompt styles (``styles.csv``, A1111's format): UTF-8 with or without a BOM, columns
``name,prompt,negative_prompt`` (the old two-column ``name,text`` too); rows whose name starts
with ``#`` are ignored. A style's text holding ``{prompt}`` wraps the prompt; otherwise it is
joined to it with a comma (both stripped). Writing keeps the previous file as ``<name>.bak``."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from modules.core.atomic import atomic_open

FIELDS = ("name", "prompt", "negative_prompt")


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str
    negative_prompt: str


def read_styles(path: Path) -> dict[str, PromptStyle]:
    """The styles of ``path`` by name (empty when there is no file)."""
    try:
        # newline="" (as A1111 and the csv module want): line breaks inside quoted prompts survive.
        with open(path, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    styles: dict[str, PromptStyle] = {}
    for row in csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True):
        name = (row.get("name") or "").strip()
        if not name or name.startswith("#"):
            continue
        prompt = row.get("prompt") if "prompt" in row else row.get("text")
        styles[name] = PromptStyle(name, prompt or "", row.get("negative_prompt") or "")
    return styles


def write_styles(path: Path, styles: Mapping[str, PromptStyle] | Iterable[PromptStyle]) -> None:
    """Write ``styles`` as A1111 does: the old file is first copied to ``<name>.bak`` (``styles.csv.bak``),
    then the new one is written (atomically here): UTF-8 with a BOM, header ``name,prompt,negative_prompt``,
    ``csv`` quoting and ``\\r\\n`` line ends (``csv.DictWriter``'s)."""
    rows = styles.values() if isinstance(styles, Mapping) else styles
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(FIELDS)
    for style in rows:
        writer.writerow((style.name, style.prompt, style.negative_prompt))
    if path.exists():
        shutil.copy(path, path.with_name(path.name + ".bak"))
    with atomic_open(path) as handle:
        handle.write(buffer.getvalue().encode("utf-8-sig"))


def apply_style_text(style_text: str, prompt: str) -> str:
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, styles: list[PromptStyle]) -> tuple[str, str]:
    for style in styles:
        prompt = apply_style_text(style.prompt, prompt)
        negative_prompt = apply_style_text(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt
