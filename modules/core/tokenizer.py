"""The CLIP tokenizer, built offline from the BPE merge list shipped in ``configs/tokenizers``.

transformers does not ship the CLIP vocabulary, and fetching ``openai/clip-vit-large-patch14`` from a
hub is not allowed at run time, so the vocabulary is rebuilt here exactly as OpenAI's CLIP builds it:
256 byte symbols, the same symbols with ``</w>``, one entry per merge, then the two special tokens.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

from transformers import CLIPTokenizer

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
VOCAB_SIZE = 49408
# The merge list has a version line, then the merges CLIP uses (49152 - 256 - 2 of them).
_MERGE_COUNT = 49152 - 256 - 2


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte→unicode table, in vocabulary order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def read_merges(bpe_file: Path) -> list[tuple[str, str]]:
    lines = gzip.open(bpe_file).read().decode("utf-8").split("\n")
    return [tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1]]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}


@functools.lru_cache(maxsize=4)
def load_clip_tokenizer(bpe_file: Path) -> CLIPTokenizer:
    """A CLIP tokenizer (ids identical to openai/clip-vit-large-patch14's). Cached: building takes ~1 s."""
    if not bpe_file.is_file():
        raise FileNotFoundError(f"CLIP vocabulary missing: {bpe_file} (it ships with Hanga under configs/)")
    merges = read_merges(bpe_file)
    vocab = build_vocab(merges)
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"{bpe_file}: expected a {VOCAB_SIZE}-token CLIP vocabulary, built {len(vocab)}")
    return CLIPTokenizer(
        vocab=vocab, merges=merges, unk_token=EOS, bos_token=BOS, eos_token=EOS, pad_token=EOS
    )


def tokenizer_file(configs_dir: Path, name: str = "clip-bpe") -> Path:
    return configs_dir / "tokenizers" / name / "bpe_simple_vocab_16e6.txt.gz"
