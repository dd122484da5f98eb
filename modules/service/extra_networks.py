"""The extra-networks pages (A1111's card tabs under the prompt): what each page lists, the text a
card puts into the prompt, its preview picture and description, and the text a search matches.

Pure listing: files are found the way the job code finds them, nothing is loaded."""

from __future__ import annotations

import json
import re
import logging
from dataclasses import dataclass
from pathlib import Path

from modules.core.conditioning.embedding_files import IMAGE_SUFFIXES

log = logging.getLogger("hanga")

PAGES = ("textual_inversion", "hypernetworks", "checkpoints", "lora")
PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


@dataclass(frozen=True)
class NetworkCard:
    name: str
    tag: str  # what a click inserts into the prompt (for checkpoints: the title to select)
    path: Path
    preview: Path | None = None
    description: str = ""
    search_text: str = ""  # lower case: name, path relative to its folder, alias

    def matches(self, query: str) -> bool:
        return all(word in self.search_text for word in query.lower().split())


def network_cards(service, page: str) -> list[NetworkCard]:
    """The cards of one page, sorted by name (case-insensitively), as A1111 lists them by default."""
    listers = {"textual_inversion": _embeddings, "hypernetworks": _hypernetworks,
               "checkpoints": _checkpoints, "lora": _loras}
    if page not in listers:
        raise ValueError(f"unknown extra-networks page {page!r}; expected one of {', '.join(PAGES)}")
    return sorted(listers[page](service), key=lambda card: (card.name.lower(), card.name))


def multiplier_text(service) -> str:
    """``extra_networks_default_multiplier`` as A1111 writes it into a tag (1.0 → "1")."""
    return f"{float(service.settings.get('extra_networks_default_multiplier')):g}"


def preview_of(path: Path) -> Path | None:
    """``name.png`` / ``name.preview.png`` (or .jpg/.jpeg/.webp/.gif) beside the file."""
    base = path.with_suffix("")
    for suffix in PREVIEW_SUFFIXES:
        for candidate in (base.with_name(base.name + suffix), base.with_name(base.name + ".preview" + suffix)):
            if candidate != path and candidate.is_file():
                return candidate
    return None


def description_of(path: Path, metadata: dict[str, str] | None = None) -> str:
    """``name.txt`` / ``name.description.txt`` beside the file, then A1111's user metadata
    ``name.json`` ("description"), then the file's own ``modelspec.description``."""
    base = path.with_suffix("")
    for candidate in (base.with_name(base.name + ".txt"), base.with_name(base.name + ".description.txt")):
        if candidate.is_file():
            return _read_text(candidate)
    user_metadata = base.with_name(base.name + ".json")
    if user_metadata.is_file():
        try:
            described = json.loads(_read_text(user_metadata)).get("description")
        except (ValueError, AttributeError):
            described = None
        if isinstance(described, str) and described.strip():
            return described.strip()
    return (metadata or {}).get("modelspec.description", "").strip()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as error:
        log.warning("%s cannot be read: %s", path, error)
        return ""


def _relative(path: Path, folders) -> str:
    for folder in folders:
        try:
            return path.relative_to(folder).as_posix()
        except ValueError:
            continue
    return path.name


def _card(name: str, tag: str, path: Path, folders, alias: str = "", metadata: dict[str, str] | None = None) -> NetworkCard:
    search = " ".join(part for part in (name, _relative(path, folders), alias) if part)
    return NetworkCard(name=name, tag=tag, path=path, preview=preview_of(path),
                       description=description_of(path, metadata), search_text=search.lower())


def _embeddings(service) -> list[NetworkCard]:
    folder = Path(service.embeddings.folder)
    files = service.embeddings.files()
    # A picture named like an embedding file beside it is that file's preview, not an embedding.
    stems = {path.with_suffix("") for path in files if path.suffix.lower() not in IMAGE_SUFFIXES}
    cards = []
    for path in files:
        if path.suffix.lower() in IMAGE_SUFFIXES and path.with_suffix("") in stems:
            continue
        cards.append(_card(path.stem, path.stem, path, [folder]))
    return cards


def _hypernetworks(service) -> list[NetworkCard]:
    multiplier = multiplier_text(service)
    folder = Path(service.hypernetworks.folder)
    return [_card(name, f"<hypernet:{name}:{multiplier}>", path, [folder])
            for name, path in service.hypernetworks.files().items()]


def _checkpoints(service) -> list[NetworkCard]:
    paths = service.paths
    folders = [paths.checkpoints, *paths.extra_checkpoint_dirs]
    return [_card(info.stem, info.title, info.path, folders) for info in service.models.checkpoints]


def _loras(service) -> list[NetworkCard]:
    """A LoRA's tag names it by its alias (``ss_output_name``) unless another file is called
    that, as A1111's default ``lora_preferred_name`` ("Alias from file") does."""
    multiplier = multiplier_text(service)
    files = service.loras.files()
    folders = [Path(folder) for folder in service.loras.folders]
    cards = []
    for name, path in files.items():
        metadata = service.loras.metadata(path)
        alias = metadata.get("ss_output_name", "").strip()
        shown = alias if alias and (alias == name or alias not in files) else name
        cards.append(_card(name, f"<lora:{shown}:{multiplier}>", path, folders, alias, metadata))
    return cards


def toggle_tag(prompt: str, tag: str, separator: str = " ") -> str:
    """A card click: the tag is appended to the prompt, or taken out when it is already there
    (a ``<lora:name:…>`` tag with any multiplier counts as there), as A1111's cards do."""
    prompt = prompt or ""
    network = re.fullmatch(r"<(\w+):([^:>]+)(?::[^>]*)?>", tag)
    if network:
        pattern = re.compile(rf"<{re.escape(network[1])}:{re.escape(network[2])}(?::[^>]*)?>")
    else:
        pattern = re.compile(rf"(?<![\w-]){re.escape(tag)}(?![\w-])")
    if pattern.search(prompt):
        removed = re.compile(rf"(?:,\s*|\s+)?{pattern.pattern}").sub("", prompt)
        return removed.strip().lstrip(",").strip()
    return f"{prompt}{separator}{tag}" if prompt.strip() else tag
