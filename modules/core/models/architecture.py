"""Read a checkpoint's architecture from its tensors, on top of its family's standard config.

Channel widths, block and layer counts, attention and context widths, and text-encoder width and
depth are all visible in tensor shapes, so community models that are smaller, distilled or pruned
load like the standard ones. Only attention head counts leave no trace in the weights: the family's
value is kept when it divides the width, otherwise heads of 64 channels are assumed (the choice
of every Stable Diffusion text encoder and of SD2's U-Net).
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

StateDict = Mapping[str, torch.Tensor]


def _indices(sd: StateDict, prefix: str) -> list[int]:
    """Sorted distinct integers N among keys ``<prefix>N.…``."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for key in sd if (m := pattern.match(key))})


def _shape(sd: StateDict, key: str, what: str) -> torch.Size:
    tensor = sd.get(key)
    if tensor is None:
        raise ValueError(f"the {what} is incomplete: tensor '{key}' is missing")
    return tensor.shape


def _heads(width: int, standard: int) -> int:
    if standard > 0 and width % standard == 0:
        return standard
    return max(1, width // 64) if width % 64 == 0 else 1


def infer_unet_config(sd: StateDict, standard: dict, prefix: str = "model.diffusion_model.") -> dict:
    def shape(key: str) -> torch.Size:
        return _shape(sd, prefix + key, "U-Net")

    def has(key: str) -> bool:
        return prefix + key in sd

    inputs = _indices(sd, prefix + "input_blocks.")
    downsamplers = [i for i in inputs if has(f"input_blocks.{i}.0.op.weight")]
    layers = downsamplers[0] - 1 if downsamplers else len(inputs) - 1
    levels = len(downsamplers) + 1
    firsts = [1 + level * (layers + 1) for level in range(levels)]
    widths = [int(shape(f"input_blocks.{i}.0.out_layers.3.weight")[0]) for i in firsts]
    down_attn = [has(f"input_blocks.{i}.1.proj_in.weight") for i in firsts]
    up_firsts = [level * (layers + 1) for level in range(levels)]
    up_attn = [has(f"output_blocks.{i}.1.proj_in.weight") for i in up_firsts]

    # Levels without attention have no depth of their own; they take the middle block's, which
    # diffusers reads from the last level (SDXL refiner: [4, 4, 4, 4], not [1, 4, 4, 1]).
    middle = len(_indices(sd, f"{prefix}middle_block.1.transformer_blocks.")) or 1
    depths = [len(_indices(sd, f"{prefix}input_blocks.{i}.1.transformer_blocks.")) or middle for i in firsts]
    attn_blocks = [i for i, a in zip(firsts, down_attn) if a]
    config = dict(standard)
    config.update(
        in_channels=int(shape("input_blocks.0.0.weight")[1]),
        out_channels=int(shape("out.2.weight")[0]),
        block_out_channels=widths,
        layers_per_block=layers,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in down_attn],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attn],
        transformer_layers_per_block=depths[0] if len(set(depths)) == 1 else depths,
    )
    if attn_blocks:
        first = f"input_blocks.{attn_blocks[0]}.1."
        config["cross_attention_dim"] = int(shape(first + "transformer_blocks.0.attn2.to_k.weight")[1])
        config["use_linear_projection"] = len(shape(first + "proj_in.weight")) == 2
    if has("label_emb.0.0.weight"):  # SDXL: pooled text and size ids enter the time embedding
        config["addition_embed_type"] = "text_time"
        config["projection_class_embeddings_input_dim"] = int(shape("label_emb.0.0.weight")[1])
    time_dim = int(shape("time_embed.0.weight")[0])
    if time_dim != 4 * widths[0]:
        config["time_embedding_dim"] = time_dim
    config["attention_head_dim"] = _unet_heads(standard.get("attention_head_dim", 8), widths)
    return config


def _unet_heads(standard: int | list[int], widths: list[int]) -> int | list[int]:
    """diffusers' SD U-Net reads ``attention_head_dim`` as the number of heads per level."""
    per_level = standard if isinstance(standard, list) else [standard] * len(widths)
    if len(per_level) != len(widths):
        per_level = [per_level[0]] * len(widths)
    heads = [_heads(w, h) for w, h in zip(widths, per_level)]
    return heads[0] if len(set(heads)) == 1 else heads


def infer_vae_config(sd: StateDict, standard: dict, prefix: str = "first_stage_model.") -> dict:
    def shape(key: str) -> torch.Size:
        return _shape(sd, prefix + key, "VAE")

    levels = _indices(sd, prefix + "encoder.down.")
    config = dict(standard)
    config.update(
        in_channels=int(shape("encoder.conv_in.weight")[1]),
        out_channels=int(shape("decoder.conv_out.weight")[0]),
        latent_channels=int(shape("decoder.conv_in.weight")[1]),
        block_out_channels=[int(shape(f"encoder.down.{i}.block.0.conv1.weight")[0]) for i in levels],
        layers_per_block=len(_indices(sd, prefix + "encoder.down.0.block.")),
        down_block_types=["DownEncoderBlock2D"] * len(levels),
        up_block_types=["UpDecoderBlock2D"] * len(levels),
    )
    return config


def infer_clip_text_config(sd: StateDict, standard: dict, prefix: str) -> dict:
    """``prefix`` ends just before ``embeddings.`` / ``encoder.`` (HF CLIPTextModel's text_model)."""

    def shape(key: str) -> torch.Size:
        return _shape(sd, prefix + key, "text encoder")

    vocab, hidden = shape("embeddings.token_embedding.weight")
    config = dict(standard)
    config.update(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        max_position_embeddings=int(shape("embeddings.position_embedding.weight")[0]),
        num_hidden_layers=len(_indices(sd, prefix + "encoder.layers.")),
        intermediate_size=int(shape("encoder.layers.0.mlp.fc1.weight")[0]),
    )
    standard_heads = standard["num_attention_heads"] if hidden == standard["hidden_size"] else 0
    config["num_attention_heads"] = _heads(int(hidden), standard_heads)
    return config
