"""Prompt styles of ``<data>/styles.csv`` for the UI and the API: listed, applied to a request
(A1111's rules: ``{prompt}`` wraps, else a comma joins; unknown names are ignored), added,
changed and deleted (the file is kept as ``styles.csv.bak`` before each write)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from modules.core.generation.request import InvalidRequest
from modules.core.styles import PromptStyle, apply_styles, read_styles, write_styles


class StyleLibrary:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def all(self) -> dict[str, PromptStyle]:
        return read_styles(self.path)

    def names(self) -> list[str]:
        return list(self.all())

    def apply(self, request, names: list[str] | None):
        """``request`` with the named styles applied to its prompt and negative prompt."""
        if not names:
            return request
        known = self.all()
        chosen = [known[name] for name in names if name in known]
        prompt, negative = apply_styles(request.prompt, request.negative_prompt, chosen)
        return replace(request, prompt=prompt, negative_prompt=negative)

    def save(self, name: str, prompt: str, negative_prompt: str) -> None:
        name = (name or "").strip()
        if not name or name.startswith("#"):
            raise InvalidRequest("name", "a style needs a name that does not start with #")
        with self._lock:
            styles = self.all()
            styles[name] = PromptStyle(name, prompt or "", negative_prompt or "")
            write_styles(self.path, styles)

    def delete(self, name: str) -> bool:
        with self._lock:
            styles = self.all()
            if name not in styles:
                return False
            del styles[name]
            write_styles(self.path, styles)
            return True
