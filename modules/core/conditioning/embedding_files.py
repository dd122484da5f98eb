"""What textual-inversion files hold (§5.7): A1111's ``.pt``/``.bin`` (``string_to_param``), SDXL's
``clip_l``/``clip_g`` pair, a diffusers concept (one named tensor), and embeddings carried in a
picture's ``sd-ti-embedding`` text chunk (base64 JSON). Reading the files is the caller's job."""

from __future__ import annotations

import base64
import json
from typing import Mapping

import torch
from PIL import Image

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors", ".png", ".webp", ".jxl", ".avif")
IMAGE_SUFFIXES = (".png", ".webp", ".jxl", ".avif")


def is_embedding_file(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(EMBEDDING_SUFFIXES) and not any(lower.endswith(".preview" + s) for s in IMAGE_SUFFIXES)


def embedding_vectors(data: object) -> torch.Tensor | dict[str, torch.Tensor]:
    """The vectors of one embedding: (n, width), or SDXL's {"clip_l": …, "clip_g": …}."""
    if not isinstance(data, Mapping):
        raise ValueError("not an embedding: the file holds no dict")
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        if len(params) != 1:
            raise ValueError(f"not an embedding: string_to_param has {len(params)} entries, not 1")
        vectors = next(iter(params.values()))
    elif "clip_g" in data and "clip_l" in data:
        return {"clip_l": data["clip_l"].detach().float(), "clip_g": data["clip_g"].detach().float()}
    elif len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
        vectors = next(iter(data.values()))
    else:
        raise ValueError("not an embedding: no string_to_param, clip_l/clip_g or single tensor")
    if not isinstance(vectors, torch.Tensor):
        raise ValueError("not an embedding: its vectors are not a tensor")
    vectors = vectors.detach().float()
    return vectors.unsqueeze(0) if vectors.ndim == 1 else vectors


def width_of(vectors: torch.Tensor | dict[str, torch.Tensor]) -> int:
    """A1111's shape check value: the last dimension (the sum of both for SDXL's pair)."""
    if isinstance(vectors, dict):
        return sum(int(tensor.shape[-1]) for tensor in vectors.values())
    return int(vectors.shape[-1])


def embedding_in_image(image: Image.Image) -> dict | None:
    """The embedding dict a picture carries in its ``sd-ti-embedding`` text chunk, if any."""
    text = getattr(image, "text", {}).get("sd-ti-embedding") if hasattr(image, "text") else None
    if text is None:
        text = image.info.get("sd-ti-embedding")
    if not text:
        return None

    def tensors(obj: dict):
        return torch.tensor(obj["TORCHTENSOR"]) if "TORCHTENSOR" in obj else obj

    return json.loads(base64.b64decode(text), object_hook=tensors)
