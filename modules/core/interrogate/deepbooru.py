"""DeepBooru: A1111's "Interrogate DeepBooru", a Danbooru-tag classifier for anime-style images.

The network is DeepDanbooru's ``resnet_custom_v3`` as ported to PyTorch for A1111 (the file users
keep as ``model-resnet_custom_v3.pt``). That file is a plain ``torch.save``d dict: the weights of
179 convolutions named ``n_Conv_0`` … ``n_Conv_178`` (batch norm already folded into them, so
every conv but the last has a bias) plus a ``"tags"`` entry, the list of 9176 tag names that the
outputs stand for. Users bring their own copy, so the module names and shapes here must match it
key for key.

Layout: a 7×7/2 stem and a 3×3/2 max-pool, then ResNet bottleneck blocks (1×1 reduce, 3×3,
1×1 expand, residual add, ReLU) in stages of 3, 8, 20, 20, 3 and 3 blocks, then a 1×1 conv to one
logit per tag, a global average and a sigmoid. Each stage's first block halves the size (except
the first stage's) and has a 1×1 projection shortcut; its conv is numbered *before* the block's
three convs, except in the second 1024-channel stage, where the converter numbered it *after*.
Padding is TensorFlow's "SAME" (the weights come from Keras), which for the 512×512 input pads a
stride-2 layer on the right/bottom only.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from modules.core.generation.image_ops import resize_image
from modules.core.safe_load import load_torch_file, unwrap_state_dict

IMAGE_SIZE = 512
TAGS_KEY = "tags"
STEM_CHANNELS = 64

# One row per stage: bottleneck width, output channels, blocks, stride of its first block, and
# whether the first block's projection conv is numbered before or after its three convs.
_STAGES = (
    (64, 256, 3, 1, "before"),
    (128, 512, 8, 2, "before"),
    (256, 1024, 20, 2, "before"),
    (256, 1024, 20, 2, "after"),
    (512, 2048, 3, 2, "before"),
    (1024, 4096, 3, 2, "before"),
)


@dataclass(frozen=True)
class _Block:
    """Names of one bottleneck block's convs; ``shortcut`` is None for an identity shortcut."""

    reduce: str
    spatial: str
    expand: str
    shortcut: str | None
    stride: int


def _same_pad(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow "SAME" padding: output size ceil(size / stride), any odd pixel on the far side."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


class DeepDanbooruModel(nn.Module):
    """``resnet_custom_v3`` with A1111's parameter names.

    ``forward`` takes RGB images as an ``[N, H, W, 3]`` tensor in 0..1 (A1111 feeds 512×512) and
    returns ``[N, len(tags)]`` probabilities. ``width_divisor`` divides every channel count: 1 is
    the real model; larger values build a small model with the same names, for tests.
    """

    def __init__(self, tags: Sequence[str], width_divisor: int = 1):
        super().__init__()
        if width_divisor < 1 or STEM_CHANNELS % width_divisor:
            raise ValueError(f"width_divisor must divide {STEM_CHANNELS}, got {width_divisor}")
        self.tags: list[str] = list(tags)
        self.width_divisor = width_divisor
        names = (f"n_Conv_{index}" for index in itertools.count())

        def add_conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                     bias: bool = True) -> str:
            name = next(names)
            self.add_module(name, nn.Conv2d(in_channels, out_channels, kernel, stride=stride, bias=bias))
            return name

        channels = STEM_CHANNELS // width_divisor
        add_conv(3, channels, 7, stride=2)
        self.n_MaxPool_0 = nn.MaxPool2d(kernel_size=3, stride=2)
        self._blocks: list[_Block] = []
        for mid, out, count, stride, shortcut_at in _STAGES:
            mid, out = mid // width_divisor, out // width_divisor
            for block in range(count):
                block_stride = stride if block == 0 else 1
                at = shortcut_at if block == 0 else None
                shortcut = add_conv(channels, out, 1, block_stride) if at == "before" else None
                reduce = add_conv(channels, mid, 1)
                spatial = add_conv(mid, mid, 3, block_stride)
                expand = add_conv(mid, out, 1)
                if at == "after":
                    shortcut = add_conv(channels, out, 1, block_stride)
                self._blocks.append(_Block(reduce, spatial, expand, shortcut, block_stride))
                channels = out
        self._head = add_conv(channels, len(self.tags), 1, bias=False)

    @property
    def head(self) -> nn.Conv2d:
        """The last conv (``n_Conv_178``): one output channel, a logit, per tag."""
        return self.get_submodule(self._head)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(self.n_Conv_0.weight.dtype)
        x = F.relu(self.n_Conv_0(_same_pad(x, 7, 2)))
        x = self.n_MaxPool_0(_same_pad(x, 3, 2, value=-math.inf))
        for block in self._blocks:
            x = self._bottleneck(block, x)
        logits = self.head(x).mean(dim=(2, 3))
        return torch.sigmoid(logits)

    def _bottleneck(self, block: _Block, x: torch.Tensor) -> torch.Tensor:
        conv = self.get_submodule
        shortcut = x if block.shortcut is None else conv(block.shortcut)(x)
        h = F.relu(conv(block.reduce)(x))
        h = F.relu(conv(block.spatial)(_same_pad(h, 3, block.stride)))
        return F.relu(conv(block.expand)(h) + shortcut)


def _expected_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _describe_keys(keys: set[str], limit: int = 8) -> str:
    names = sorted(keys, key=lambda k: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", k)])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_deepbooru(state_dict: Mapping[str, object]) -> DeepDanbooruModel:
    """The model in a DeepBooru state dict (weights plus its ``"tags"`` list), in eval mode.

    Keys and shapes are checked strictly: a file for another network is refused with a
    ``ValueError`` naming what is missing, unexpected or the wrong shape. The weights keep the
    file's dtype and stay on the device they were loaded to.
    """
    tags = state_dict.get(TAGS_KEY)
    if not isinstance(tags, (list, tuple)) or not all(isinstance(tag, str) for tag in tags):
        raise ValueError(f"not a DeepBooru model: it has no {TAGS_KEY!r} entry with the list of tag "
                         f"names (A1111's model-resnet_custom_v3.pt stores it beside the weights)")
    weights = {key: value for key, value in state_dict.items() if key != TAGS_KEY}
    stem = weights.get("n_Conv_0.weight")
    if not isinstance(stem, torch.Tensor) or stem.ndim != 4 or not 0 < stem.shape[0] <= STEM_CHANNELS \
            or STEM_CHANNELS % stem.shape[0]:
        raise ValueError("not a DeepBooru model: n_Conv_0.weight is missing or not a "
                         f"[{STEM_CHANNELS}, 3, 7, 7] stem convolution")
    with torch.device("meta"):
        model = DeepDanbooruModel(tags, width_divisor=STEM_CHANNELS // stem.shape[0])
    expected = _expected_shapes(model)
    problems = []
    missing = expected.keys() - weights.keys()
    unexpected = weights.keys() - expected.keys()
    if missing:
        problems.append(f"missing keys: {_describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe_keys(unexpected)}")
    wrong = [f"{key} is {list(getattr(weights[key], 'shape', ()))}, expected {list(shape)}"
             for key, shape in expected.items()
             if key in weights and getattr(weights[key], "shape", None) != shape]
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong[:8]) + (" …" if len(wrong) > 8 else ""))
    if problems:
        raise ValueError(f"not a DeepBooru resnet_custom_v3 model ({len(tags)} tags): "
                         + "; ".join(problems))
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_deepbooru_file(path: str | os.PathLike, *, allow_unsafe: bool = False) -> DeepDanbooruModel:
    """Read ``model-resnet_custom_v3.pt`` through the restricted unpickler onto the CPU.

    Uses ``load_torch_file`` rather than ``load_state_dict``: the latter keeps tensors only and
    would drop the ``"tags"`` list.
    """
    obj = unwrap_state_dict(load_torch_file(path, device="cpu", allow_unsafe=allow_unsafe))
    if not isinstance(obj, Mapping):
        raise ValueError(f"{os.fspath(path)}: holds a {type(obj).__name__}, not a DeepBooru state dict")
    try:
        return load_deepbooru(obj)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from None


@dataclass(frozen=True)
class TagOptions:
    """A1111's DeepBooru settings, under their setting keys, with A1111's defaults."""

    interrogate_deepbooru_score_threshold: float = 0.5
    deepbooru_sort_alpha: bool = True  # False: by probability, highest first
    deepbooru_use_spaces: bool = True  # False: keep Danbooru's underscores
    deepbooru_escape: bool = True  # backslash before \ ( ) so they are not read as emphasis
    deepbooru_filter_tags: str = ""  # comma-separated tags to leave out
    interrogate_return_ranks: bool = False  # True: "(tag:0.987)"


# A1111 escapes exactly these; square brackets are left alone.
_SPECIAL = re.compile(r"([\\()])")


def format_tags(tags: Sequence[str], probabilities: Sequence[float], options: TagOptions) -> str:
    """The prompt text for one image's tag probabilities, as A1111's ``tag_multi`` writes it.

    Rating tags (``rating:safe`` …) are never written. Filter entries are compared with the raw
    tag after spaces in them become underscores, so "long hair" filters ``long_hair``.
    """
    threshold = options.interrogate_deepbooru_score_threshold
    kept = {tag: float(p) for tag, p in zip(tags, probabilities)
            if p >= threshold and not tag.startswith("rating:")}
    if options.deepbooru_sort_alpha:
        ordered = sorted(kept)
    else:
        ordered = sorted(kept, key=lambda tag: -kept[tag])
    left_out = {entry.strip().replace(" ", "_") for entry in options.deepbooru_filter_tags.split(",")}
    parts = []
    for tag in ordered:
        if tag in left_out:
            continue
        text = tag.replace("_", " ") if options.deepbooru_use_spaces else tag
        if options.deepbooru_escape:
            text = _SPECIAL.sub(r"\\\1", text)
        if options.interrogate_return_ranks:
            text = f"({text}:{kept[tag]:.3f})"
        parts.append(text)
    return ", ".join(parts)


def image_to_input(image: Image.Image) -> torch.Tensor:
    """``[1, 512, 512, 3]`` float32 in 0..1: the image fitted into 512×512 with A1111's "Resize and
    fill" (aspect kept, the bars filled by stretching the edge pixels). Alpha is dropped, not
    composited, as in A1111."""
    picture = resize_image(2, image.convert("RGB"), IMAGE_SIZE, IMAGE_SIZE)
    array = np.asarray(picture, dtype=np.float32) / 255
    return torch.from_numpy(array).unsqueeze(0)


@torch.inference_mode()
def tag_image(model: DeepDanbooruModel, image: Image.Image, options: TagOptions = TagOptions(),
              device: str | torch.device | None = None) -> str:
    """Interrogate one image: its tags as prompt text. ``device`` is where the input goes
    (default: where the model's weights are); moving the model is the memory manager's job."""
    device = model.n_Conv_0.weight.device if device is None else device
    probabilities = model(image_to_input(image).to(device))[0]
    return format_tags(model.tags, probabilities.float().cpu().tolist(), options)
