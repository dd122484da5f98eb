"""Textual-inversion placeholders in prompts (``a1111-compat.md`` §5.4, §5.7).

An embedding is used by writing its name in a prompt. As in A1111, names are found by their CLIP
tokens, not by text: each name is tokenized, and at every prompt position the longest name whose
tokens start there wins. The name's tokens are then replaced by the embedding's vectors (one token
slot per vector) when the chunk is encoded. Reading embedding files is the model zoo's job; this
module takes the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from transformers import CLIPTokenizer


@dataclass(frozen=True, eq=False)
class TextualInversion:
    name: str
    vectors: torch.Tensor | dict[str, torch.Tensor]  # (vectors, width), or SDXL's {"clip_l", "clip_g"}
    short_hash: str | None = None  # first 12 hex of the file's sha256 ("TI hashes")

    @property
    def length(self) -> int:
        first = next(iter(self.vectors.values())) if isinstance(self.vectors, dict) else self.vectors
        return int(first.shape[0])

    def vectors_for(self, encoder: str | None) -> torch.Tensor:
        """The vectors for one text encoder: SDXL files hold "clip_l" (for CLIP-L) and "clip_g"
        (for bigG); other files hold one set, used whatever ``encoder`` is."""
        if not isinstance(self.vectors, dict):
            return self.vectors
        if encoder not in self.vectors:
            raise ValueError(f"embedding {self.name!r} has no {encoder or 'single-encoder'} vectors")
        return self.vectors[encoder]


class EmbeddingLookup:
    """Embeddings by the token ids of their names, longest name first for a shared first token."""

    def __init__(self, tokenizer: CLIPTokenizer, embeddings: Iterable[TextualInversion] = ()):
        self.by_first_token: dict[int, list[tuple[list[int], TextualInversion]]] = {}
        for embedding in embeddings:
            ids = tokenizer([embedding.name], truncation=False, add_special_tokens=False)["input_ids"][0]
            if ids:
                self.by_first_token.setdefault(ids[0], []).append((ids, embedding))
        for candidates in self.by_first_token.values():
            candidates.sort(key=lambda pair: len(pair[0]), reverse=True)
        self.used: dict[str, TextualInversion] = {}  # every embedding a prompt has named, in order

    def __bool__(self) -> bool:
        return bool(self.by_first_token)

    def find_at(self, tokens: Sequence[int], position: int) -> tuple[TextualInversion | None, int]:
        """The embedding whose name's tokens start at ``position``, and how many tokens that name takes."""
        for ids, embedding in self.by_first_token.get(tokens[position], ()):
            if list(tokens[position:position + len(ids)]) == ids:
                self.used.setdefault(embedding.name, embedding)
                return embedding, len(ids)
        return None, 0


def insert_vectors(token_embeds: torch.Tensor, fixes: Sequence[Sequence[tuple[int, TextualInversion]]],
                   encoder: str | None = None) -> torch.Tensor:
    """Token embeddings (batch, 77, width) with each chunk's embedding vectors written over its
    placeholder slots; ``offset`` counts from after BOS, and vectors past the chunk end are cut."""
    rows = []
    for row, row_fixes in zip(token_embeds, fixes):
        for offset, embedding in row_fixes:
            count = min(row.shape[0] - offset - 1, embedding.length)
            vectors = embedding.vectors_for(encoder)[:count].to(device=row.device, dtype=row.dtype)
            row = torch.cat([row[: offset + 1], vectors, row[offset + 1 + count:]])
        rows.append(row)
    return torch.stack(rows)
