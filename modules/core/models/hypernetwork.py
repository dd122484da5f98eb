"""A1111 hypernetworks (``models/hypernetworks/*.pt``): per attention width a pair of small MLPs that
rewrite the keys' and the values' input, ``x + mlp(x)·multiplier``.

They are applied through diffusers attention processors installed for one sampling run and then
removed (``applied``): in every attention layer whose context width has a pair, ``to_k`` sees
``hk(context)`` and ``to_v`` sees ``hv(context)``; the query is untouched. Widths 320/640/1280 also
reach self-attention, 768/1024 cross-attention, as in A1111. Several hypernetworks chain.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

_ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
}
_OLD_KEYS = {"linear1.bias": "linear.0.bias", "linear1.weight": "linear.0.weight",
             "linear2.bias": "linear.1.bias", "linear2.weight": "linear.1.weight"}


def activation(name: str | None) -> type[torch.nn.Module] | None:
    """A1111's names, then any torch.nn activation by its lowercase class name; None for linear."""
    if name in (None, "linear"):
        return None
    if name in _ACTIVATIONS:
        return _ACTIVATIONS[name]
    for attribute in dir(torch.nn.modules.activation):
        candidate = getattr(torch.nn.modules.activation, attribute)
        if isinstance(candidate, type) and issubclass(candidate, torch.nn.Module) and attribute.lower() == name:
            return candidate
    raise ValueError(f"hypernetwork uses an unsupported activation function: {name}")


def dropout_structure(layers: Sequence[float], use_dropout: bool, last_layer_dropout: bool) -> list[float]:
    """A1111's default dropout per layer when the file gives none: 0.3 on the hidden layers."""
    if not use_dropout:
        return [0.0] * len(layers)
    return [0.0, *([0.3] * (len(layers) - 3)), 0.3 if last_layer_dropout else 0.0, 0.0]


class HypernetworkModule(torch.nn.Module):
    """``Sequential`` of Linear → activation (not after the last layer unless ``activate_output``) →
    LayerNorm → Dropout, in A1111's order, so its state-dict keys (``linear.N.*``) match the files."""

    def __init__(self, dim: int, layers: Sequence[float], act: str | None, layer_norm: bool,
                 dropouts: Sequence[float], activate_output: bool):
        super().__init__()
        parts: list[torch.nn.Module] = []
        make_activation = activation(act)
        for i in range(len(layers) - 1):
            parts.append(torch.nn.Linear(int(dim * layers[i]), int(dim * layers[i + 1])))
            last = i >= len(layers) - 2
            if make_activation is not None and not (last and not activate_output):
                parts.append(make_activation())
            if layer_norm:
                parts.append(torch.nn.LayerNorm(int(dim * layers[i + 1])))
            if dropouts[i + 1] > 0:
                parts.append(torch.nn.Dropout(p=dropouts[i + 1]))
        self.linear = torch.nn.Sequential(*parts)

    def forward(self, x: torch.Tensor, multiplier: float) -> torch.Tensor:
        return x + self.linear(x) * multiplier


@dataclass
class Hypernetwork:
    name: str
    layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]] = field(default_factory=dict)

    def modules(self) -> list[torch.nn.Module]:
        return [module for pair in self.layers.values() for module in pair]


def hypernetwork_from_dict(obj: Mapping, name: str) -> Hypernetwork:
    """Build from the dict a hypernetwork ``.pt`` holds (integer keys = widths → (k, v) state dicts)."""
    if not isinstance(obj, Mapping):
        raise ValueError("not a hypernetwork: the file holds no dict")
    layers = list(obj.get("layer_structure") or [1, 2, 1])
    given_dropouts = obj.get("dropout_structure")
    use_dropout = bool(given_dropouts is not None and any(given_dropouts)) or bool(obj.get("use_dropout", False))
    dropouts = list(given_dropouts) if given_dropouts is not None else dropout_structure(
        layers, use_dropout, bool(obj.get("last_layer_dropout", False)))
    network = Hypernetwork(name=name)
    for width, pair in obj.items():
        if not isinstance(width, int):
            continue
        modules = []
        for state_dict in pair[:2]:
            module = HypernetworkModule(width, layers, obj.get("activation_func"), bool(obj.get("is_layer_norm", False)),
                                        dropouts, bool(obj.get("activate_output", True)))
            fixed = {_OLD_KEYS.get(key, key): value for key, value in state_dict.items()}
            module.load_state_dict(fixed)
            modules.append(module.eval().requires_grad_(False))
        network.layers[width] = (modules[0], modules[1])
    if not network.layers:
        raise ValueError("not a hypernetwork: no layers keyed by attention width")
    return network


class HypernetworkAttnProcessor:
    """Scaled-dot-product attention (as diffusers' ``AttnProcessor2_0``) whose key and value inputs
    pass through the active hypernetworks first."""

    def __init__(self, active: Sequence[tuple[Hypernetwork, float]]):
        self.active = list(active)

    def contexts(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context_k = context_v = context
        for network, multiplier in self.active:
            pair = network.layers.get(context.shape[-1])
            if pair is None:
                continue
            hk, hv = pair
            context_k = hk(context_k.float(), multiplier).to(context.dtype)
            context_v = hv(context_v.float(), multiplier).to(context.dtype)
        return context_k, context_v

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        context_k, context_v = self.contexts(encoder_hidden_states)
        key, value = attn.to_k(context_k), attn.to_v(context_v)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                       is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextlib.contextmanager
def applied(unet: UNet2DConditionModel, active: Sequence[tuple[Hypernetwork, float]]) -> Iterator[None]:
    """The hypernetworks act on ``unet`` inside the block; its own processors are back afterwards."""
    if not active:
        yield
        return
    originals = unet.attn_processors
    unet.set_attn_processor(HypernetworkAttnProcessor(active))
    try:
        yield
    finally:
        unet.set_attn_processor(originals)


class HypernetworkSource(Protocol):
    """Where a job gets hypernetworks by name (the service loads and caches the files)."""

    def load(self, name: str) -> Hypernetwork | None: ...
    def short_hash(self, name: str) -> str | None: ...
