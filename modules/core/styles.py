"""Prompt styles (``styles.csv``, A1111's format): UTF-8 with or without a BOM, columns
``name,prompt,negative_prompt`` (the old two-column ``name,text`` too); rows whose name starts
with ``#`` are ignored. A style's text holding ``{prompt}`` wraps the prompt; otherwise it is
joined to it with a comma (both stripped)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str
    negative_prompt: str


def read_styles(path: Path) -> dict[str, PromptStyle]:
    """The styles of ``path`` by name (empty when there is no file)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    styles: dict[str, PromptStyle] = {}
    for row in csv.DictReader(text.splitlines(), skipinitialspace=True):
        name = (row.get("name") or "").strip()
        if not name or name.startswith("#"):
            continue
        prompt = row.get("prompt") if "prompt" in row else row.get("text")
        styles[name] = PromptStyle(name, prompt or "", row.get("negative_prompt") or "")
    return styles


def apply_style_text(style_text: str, prompt: str) -> str:
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, styles: list[PromptStyle]) -> tuple[str, str]:
    for style in styles:
        prompt = apply_style_text(style.prompt, prompt)
        negative_prompt = apply_style_text(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt
