"""Text encoders of single-file checkpoints → transformers CLIP text models.

SD1 (and SDXL's first encoder) store OpenAI CLIP ViT-L in transformers' own names. SD2 and SDXL's
bigG store OpenCLIP's layout (``token_embedding``, ``positional_embedding``,
``transformer.resblocks.N`` with one fused q/k/v projection, ``ln_final``, ``text_projection``),
which maps one to one onto transformers' CLIP text model with the fused projection split in three.
"""

from __future__ import annotations

from typing import Mapping

import torch
from accelerate import init_empty_weights
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from modules.core.models.architecture import _heads, _indices, _shape
from modules.core.models.weights import assign_weights

StateDict = Mapping[str, torch.Tensor]

_RESBLOCK_PARTS = {
    "ln_1.": "layer_norm1.",
    "ln_2.": "layer_norm2.",
    "attn.out_proj.": "self_attn.out_proj.",
    "mlp.c_fc.": "mlp.fc1.",
    "mlp.c_proj.": "mlp.fc2.",
}


def openclip_layers(sd: StateDict, prefix: str) -> int:
    return len(_indices(sd, prefix + "transformer.resblocks."))


def openclip_to_transformers(sd: StateDict, prefix: str, layers: int | None = None) -> dict[str, torch.Tensor]:
    """OpenCLIP text-tower tensors under ``prefix`` → CLIPTextModel names (no ``text_model.``
    level), keeping the first ``layers`` blocks; ``text_projection`` becomes a Linear weight."""
    out: dict[str, torch.Tensor] = {}
    block = prefix + "transformer.resblocks."
    for key, tensor in sd.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if rest == "token_embedding.weight":
            out["embeddings.token_embedding.weight"] = tensor
        elif rest == "positional_embedding":
            out["embeddings.position_embedding.weight"] = tensor
        elif rest.startswith("ln_final."):
            out["final_layer_norm." + rest[len("ln_final."):]] = tensor
        elif rest == "text_projection":
            out["text_projection.weight"] = tensor.T.contiguous()
        elif key.startswith(block):
            index, _, part = key[len(block):].partition(".")
            if layers is not None and int(index) >= layers:
                continue
            layer = f"encoder.layers.{index}."
            if part.startswith("attn.in_proj_"):
                kind = part.rsplit("_", 1)[1]  # weight | bias
                for name, piece in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    out[f"{layer}self_attn.{name}.{kind}"] = piece.contiguous()
                continue
            for old, new in _RESBLOCK_PARTS.items():
                if part.startswith(old):
                    out[layer + new + part[len(old):]] = tensor
                    break
    return out


def infer_openclip_config(sd: StateDict, standard: dict, prefix: str, layers: int | None = None) -> dict:
    vocab, hidden = _shape(sd, prefix + "token_embedding.weight", "text encoder")
    config = dict(standard)
    config.update(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        max_position_embeddings=int(_shape(sd, prefix + "positional_embedding", "text encoder")[0]),
        num_hidden_layers=layers if layers is not None else openclip_layers(sd, prefix),
        intermediate_size=int(_shape(sd, prefix + "transformer.resblocks.0.mlp.c_fc.weight", "text encoder")[0]),
    )
    projection = sd.get(prefix + "text_projection")
    if projection is not None:
        config["projection_dim"] = int(projection.shape[1])
    standard_heads = standard["num_attention_heads"] if hidden == standard["hidden_size"] else 0
    config["num_attention_heads"] = _heads(int(hidden), standard_heads)
    return config


def build_openclip_text(sd: StateDict, standard: dict, prefix: str, *, drop_last_layer: bool = False,
                        with_projection: bool = False, placement: tuple = (None, None)) -> CLIPTextModel | CLIPTextModelWithProjection:
    """An OpenCLIP text tower as a CLIP text model. SD2 reads only the penultimate layer, so its
    last block is left out (``drop_last_layer``); SDXL's bigG keeps it for the pooled vector
    (``with_projection``)."""
    layers = openclip_layers(sd, prefix) - (1 if drop_last_layer else 0)
    config = CLIPTextConfig(**infer_openclip_config(sd, standard, prefix, layers))
    weights = openclip_to_transformers(sd, prefix, layers)
    if with_projection:
        # CLIPTextModelWithProjection nests the text model under "text_model.".
        weights = {(k if k == "text_projection.weight" else "text_model." + k): v for k, v in weights.items()}
        with init_empty_weights():
            model = CLIPTextModelWithProjection(config)
    else:
        weights.pop("text_projection.weight", None)
        with init_empty_weights():
            model = CLIPTextModel(config)
    assign_weights(model, weights, "text encoder", *placement)
    return model
