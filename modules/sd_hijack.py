"""A1111 facade: ``modules.sd_hijack.model_hijack`` — what extensions read from it: the textual-inversion
embeddings (``embedding_db``) and prompt lengths. Hanga patches no model; nothing here changes one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modules.service.extensions import context

SD1_WIDTH = 768  # the text encoder width assumed before a model is loaded


@dataclass
class Embedding:
    """What A1111's ``Embedding`` objects expose to extensions (TAC reads ``filename`` and ``shape``)."""

    name: str
    filename: str
    shape: int
    vectors: int = 1
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None


class EmbeddingDatabase:
    """``model_hijack.embedding_db``: the embeddings the loaded model can use (``word_embeddings``) and
    the ones of another width (``skipped_embeddings``), read when asked."""

    def _width(self) -> int:
        service = context.current().service
        loaded = service.models.loaded if service is not None else None
        return loaded.model.text_width if loaded is not None else SD1_WIDTH

    def _catalogue(self) -> tuple[dict[str, Embedding], dict[str, Embedding]]:
        service = context.current().service
        if service is None:
            return {}, {}
        usable, skipped = service.embeddings.catalogue(self._width())
        return ({name: Embedding(name, str(path), width) for name, (path, width) in usable.items()},
                {name: Embedding(name, str(path), width) for name, (path, width) in skipped.items()})

    @property
    def word_embeddings(self) -> dict[str, Embedding]:
        return self._catalogue()[0]

    @property
    def skipped_embeddings(self) -> dict[str, Embedding]:
        return self._catalogue()[1]

    @property
    def embedding_dirs(self) -> dict[str, Any]:
        paths = context.current().paths
        return {str(paths.embeddings): paths.embeddings} if paths is not None else {}

    def load_textual_inversion_embeddings(self, force_reload: bool = False, sync_with_sd_model: bool = True) -> None:
        """Embeddings are read from their folder whenever they are used (changed files are re-read)."""


class StableDiffusionModelHijack:
    embedding_db = EmbeddingDatabase()
    optimization_method: str | None = None
    fixes = None
    comments: list = []
    extra_generation_params: dict = {}

    def get_prompt_lengths(self, text: str) -> tuple[int, int]:
        """``(tokens used, tokens the chunks hold)`` of a prompt, as the token counter shows it."""
        service = context.current().service
        if service is None:
            raise RuntimeError("prompt lengths are known once Hanga has started")
        return service.token_count(text, 1)

    def hijack(self, m) -> None:
        """Hanga does not patch models."""

    def undo_hijack(self, m) -> None:
        """Hanga does not patch models."""

    def clear_comments(self) -> None:
        self.comments = []


model_hijack = StableDiffusionModelHijack()
