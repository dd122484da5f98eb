"""Prompt text → CLIP conditioning, the way A1111 builds it (``a1111-compat.md`` §5.3–§5.5).

A prompt is split into weighted segments, tokenized without BOS/EOS, packed into chunks of 75 tokens
(a ``BREAK`` or a full chunk starts the next one; with comma backtrack, the words after a recent
comma move to the next chunk), each chunk becomes ``[BOS] + 75 tokens + [EOS]`` padded with EOS,
chunks are encoded separately and concatenated along the token axis, and emphasis weights are
applied to the encoder output.

Families differ in the encoder layer read and the padding (§5.5): SD1 reads the layer "Clip skip"
names, then the final LayerNorm; SD2's OpenCLIP reads its penultimate layer through the final
LayerNorm (the loader drops the unused last layer, so that is the model's last output) and pads
with 0 after the first EOS; SDXL reads the penultimate layer of both encoders without the
LayerNorm, and bigG also gives the pooled vector of the first chunk (``SdxlTextConditioner``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from modules.core.conditioning.cond import CROSSATTN, VECTOR
from modules.core.conditioning.emphasis import BREAK_MARKER, parse_prompt_attention
from modules.core.conditioning.textual_inversion import EmbeddingLookup, TextualInversion, insert_vectors

CHUNK_LENGTH = 75
EMPHASIS_MODES = ("None", "Ignore", "Original", "No norm")
LAYER_MODES = ("clip_skip", "last", "penultimate")


@dataclass
class PromptChunk:
    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    # (offset after BOS, embedding): textual-inversion vectors that replace token slots when encoding
    fixes: list[tuple[int, TextualInversion]] = field(default_factory=list)


@dataclass(frozen=True)
class TextOptions:
    clip_skip: int = 1  # A1111's "Clip skip" / CLIP_stop_at_last_layers, 1..12
    emphasis: str = "Original"
    comma_padding_backtrack: int = 20
    refiner_aesthetic: tuple[float, float] = (6.0, 2.5)  # sdxl_refiner_high/low_aesthetic_score
    sdxl_clip_l_skip: bool = False  # sdxl_clip_l_skip: Clip skip acts on SDXL's CLIP-L (no LayerNorm)


class ClipTextConditioner:
    def __init__(self, tokenizer: CLIPTokenizer, encoder: CLIPTextModel | None, options: TextOptions = TextOptions(),
                 embeddings: EmbeddingLookup | None = None, layer: str = "clip_skip", pad_id: int | None = None,
                 embedding_key: str | None = None):
        """``encoder`` may be None when only tokenizing (the UI's token counter); ``embeddings`` are
        the textual inversions a prompt may name. ``layer``: "clip_skip" (SD1), "last" or
        "penultimate" (no LayerNorm); ``pad_id`` replaces every token after the first EOS;
        ``embedding_key`` picks this encoder's vectors from SDXL embeddings ("clip_l"/"clip_g")."""
        if options.emphasis not in EMPHASIS_MODES:
            raise ValueError(f"emphasis must be one of {', '.join(EMPHASIS_MODES)}; got {options.emphasis!r}")
        if layer not in LAYER_MODES:
            raise ValueError(f"layer must be one of {', '.join(LAYER_MODES)}; got {layer!r}")
        self.layer = layer
        self.pad_id = pad_id
        self.embedding_key = embedding_key
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.options = options
        self.embeddings = embeddings
        self.id_start = tokenizer.bos_token_id
        self.id_end = tokenizer.eos_token_id
        self.comma_token = tokenizer.get_vocab().get(",</w>")

    def _segments(self, line: str) -> list[tuple[str, float]]:
        if self.options.emphasis == "None":
            return [(line, 1.0)]
        return parse_prompt_attention(line)

    def tokenize_line(self, line: str) -> tuple[list[PromptChunk], int]:
        """Chunks of 77 tokens with per-token weights, and the prompt's token count."""
        segments = self._segments(line)
        token_lists = self.tokenizer([text for text, _ in segments], truncation=False, add_special_tokens=False)["input_ids"]
        packer = _ChunkPacker(self.id_start, self.id_end, self.comma_token, self.options.comma_padding_backtrack)
        for tokens, segment in zip(token_lists, segments):
            if segment == BREAK_MARKER:
                packer.next_chunk()
                continue
            position = 0
            while position < len(tokens):
                embedding, name_length = self.embeddings.find_at(tokens, position) if self.embeddings else (None, 0)
                if embedding is None:
                    packer.add(tokens[position], segment[1])
                    position += 1
                else:
                    packer.add_embedding(embedding, segment[1])
                    position += name_length
        return packer.finish()

    def token_count(self, line: str) -> tuple[int, int]:
        """(tokens used, tokens available) as the UI counter shows them, e.g. (12, 75)."""
        _, count = self.tokenize_line(line)
        return count, math.ceil(max(count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), 77·chunks, width); shorter prompts get empty chunks."""
        batch = [self.tokenize_line(text)[0] for text in texts]
        chunk_count = max(len(chunks) for chunks in batch)
        parts = []
        for index in range(chunk_count):
            column = [chunks[index] if index < len(chunks) else self._empty_chunk() for chunks in batch]
            parts.append(self._encode_chunks(column))
        return torch.hstack(parts)

    def _empty_chunk(self) -> PromptChunk:
        return PromptChunk([self.id_start] + [self.id_end] * (CHUNK_LENGTH + 1), [1.0] * (CHUNK_LENGTH + 2))

    def _encode_chunks(self, chunks: list[PromptChunk]) -> torch.Tensor:
        return self.encode_chunks(chunks)[0]

    def _token_ids(self, chunks: list[PromptChunk]) -> torch.Tensor:
        rows = []
        for chunk in chunks:
            ids = list(chunk.tokens)
            if self.pad_id is not None and self.id_end in ids:
                end = ids.index(self.id_end)
                ids[end + 1:] = [self.pad_id] * (len(ids) - end - 1)
            rows.append(ids)
        return torch.asarray(rows, device=self.encoder.device)

    def encode_chunks(self, chunks: list[PromptChunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One column of chunks → (embeddings with emphasis applied, pooled vectors or None)."""
        device = self.encoder.device
        tokens = self._token_ids(chunks)
        if any(c.fixes for c in chunks):
            # The encoder's own forward runs unchanged; a hook on its token-embedding layer writes
            # the embedding vectors over the placeholder slots for this one call.
            fixes = [c.fixes for c in chunks]
            layer = self.encoder.get_input_embeddings()
            handle = layer.register_forward_hook(lambda module, args, output: insert_vectors(output, fixes, self.embedding_key))
            try:
                z, pooled = self._hidden_states(tokens)
            finally:
                handle.remove()
        else:
            z, pooled = self._hidden_states(tokens)
        multipliers = torch.asarray([c.multipliers for c in chunks], device=device)
        return apply_emphasis(z, multipliers, self.options.emphasis), pooled

    def _hidden_states(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        skip = self.options.clip_skip if self.layer == "clip_skip" else 1
        if self.layer == "penultimate":
            outputs = self.encoder(input_ids=tokens, output_hidden_states=True)
            # A1111's sdxl_clip_l_skip: "Clip skip" N picks hidden_states[-N] of CLIP-L (bigG keeps its layer).
            use_skip = self.options.sdxl_clip_l_skip and self.embedding_key == "clip_l"
            layer = -self.options.clip_skip if use_skip else -2
            return outputs.hidden_states[layer], getattr(outputs, "text_embeds", None)
        if skip <= 1:
            return self.encoder(input_ids=tokens).last_hidden_state, None
        outputs = self.encoder(input_ids=tokens, output_hidden_states=True)
        return self.encoder.final_layer_norm(outputs.hidden_states[-skip]), None


class SdxlTextConditioner:
    """SDXL's text conditioning: the prompt is chunked once, each chunk goes through every encoder
    (CLIP-L then bigG for the base, bigG alone for the refiner), their outputs are joined along
    the width, and the last encoder's pooled vector of the first chunk becomes ``"vector"`` (with
    the aesthetic score appended for the refiner). An all-empty negative prompt gives zeros."""

    def __init__(self, encoders: list[ClipTextConditioner], refiner: bool = False):
        self.encoders = encoders
        self.first = encoders[0]
        self.refiner = refiner
        self.embeddings = self.first.embeddings
        self.options = self.first.options

    def tokenize_line(self, line: str) -> tuple[list[PromptChunk], int]:
        return self.first.tokenize_line(line)

    def token_count(self, line: str) -> tuple[int, int]:
        return self.first.token_count(line)

    @torch.no_grad()
    def encode(self, texts: list[str], negative: bool = False) -> dict[str, torch.Tensor]:
        batch = [self.tokenize_line(text)[0] for text in texts]
        chunk_count = max(len(chunks) for chunks in batch)
        parts, pooled = [], None
        for index in range(chunk_count):
            column = [chunks[index] if index < len(chunks) else self.first._empty_chunk() for chunks in batch]
            outputs = [encoder.encode_chunks(column) for encoder in self.encoders]
            parts.append(torch.cat([z for z, _ in outputs], dim=-1))
            if index == 0:
                pooled = outputs[-1][1]
        crossattn = torch.hstack(parts)
        if negative and all(text == "" for text in texts):
            crossattn, pooled = torch.zeros_like(crossattn), torch.zeros_like(pooled)
        vector = pooled.float()
        if self.refiner:
            high, low = self.options.refiner_aesthetic
            score = torch.full((vector.shape[0], 1), low if negative else high, device=vector.device)
            vector = torch.cat([vector, score], dim=1)
        return {CROSSATTN: crossattn, VECTOR: vector}

    def encode_negative(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.encode(texts, negative=True)


def apply_emphasis(z: torch.Tensor, multipliers: torch.Tensor, mode: str) -> torch.Tensor:
    if mode in ("None", "Ignore"):
        return z
    weighted = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape).to(z.dtype)
    if mode == "No norm":
        return weighted
    # "Original": restore the chunk's mean so emphasis changes direction, not overall magnitude.
    return weighted * (z.mean() / weighted.mean())


class _ChunkPacker:
    """Packs weighted tokens into 75-token chunks (A1111's tokenize_line state machine)."""

    def __init__(self, id_start: int, id_end: int, comma_token: int | None, backtrack: int):
        self.id_start, self.id_end = id_start, id_end
        self.comma_token, self.backtrack = comma_token, backtrack
        self.chunks: list[PromptChunk] = []
        self.chunk = PromptChunk()
        self.token_count = 0
        self.last_comma = -1

    def next_chunk(self, is_last: bool = False) -> None:
        chunk = self.chunk
        self.token_count += len(chunk.tokens) if is_last else CHUNK_LENGTH
        padding = CHUNK_LENGTH - len(chunk.tokens)
        if padding > 0:
            chunk.tokens += [self.id_end] * padding
            chunk.multipliers += [1.0] * padding
        chunk.tokens = [self.id_start] + chunk.tokens + [self.id_end]
        chunk.multipliers = [1.0] + chunk.multipliers + [1.0]
        self.last_comma = -1
        self.chunks.append(chunk)
        self.chunk = PromptChunk()

    def add(self, token: int, weight: float) -> None:
        chunk = self.chunk
        if token == self.comma_token:
            self.last_comma = len(chunk.tokens)
        elif (
            self.backtrack != 0
            and len(chunk.tokens) == CHUNK_LENGTH
            and self.last_comma != -1
            and len(chunk.tokens) - self.last_comma <= self.backtrack
        ):
            cut = self.last_comma + 1
            moved_tokens, moved_weights = chunk.tokens[cut:], chunk.multipliers[cut:]
            chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
            self.next_chunk()
            self.chunk.tokens, self.chunk.multipliers = moved_tokens, moved_weights
        if len(self.chunk.tokens) == CHUNK_LENGTH:
            self.next_chunk()
        self.chunk.tokens.append(token)
        self.chunk.multipliers.append(weight)

    def add_embedding(self, embedding: TextualInversion, weight: float) -> None:
        """Placeholder slots for an embedding's vectors; one that does not fit starts a new chunk."""
        if self.chunk.tokens and len(self.chunk.tokens) + embedding.length > CHUNK_LENGTH:
            self.next_chunk()
        self.chunk.fixes.append((len(self.chunk.tokens), embedding))
        self.chunk.tokens += [0] * embedding.length
        self.chunk.multipliers += [weight] * embedding.length

    def finish(self) -> tuple[list[PromptChunk], int]:
        if self.chunk.tokens or not self.chunks:
            self.next_chunk(is_last=True)
        return self.chunks, self.token_count
