"""DeepBooru (A1111's ``model-resnet_custom_v3.pt``): the full-size parameter layout checked on the
meta device against a table read off A1111's ``modules/deepbooru_model.py``, the forward pass against
an independent reference using A1111's fixed paddings, loading through the restricted unpickler, and
the tag text A1111's ``tag_multi`` writes for each setting."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from modules.core.interrogate.deepbooru import (
    DeepDanbooruModel,
    TagOptions,
    _same_pad,
    format_tags,
    image_to_input,
    load_deepbooru,
    load_deepbooru_file,
    tag_image,
)
from modules.core.safe_load import UnsafeFileError, load_state_dict

# Read off A1111's file: per stage, the index of its first conv, block count, bottleneck width,
# output width, and where the first block's projection conv sits in the numbering.
A1111_STAGES = [(1, 3, 64, 256, "before"), (11, 8, 128, 512, "before"), (36, 20, 256, 1024, "before"),
                (97, 20, 256, 1024, "after"), (158, 3, 512, 2048, "before"), (168, 3, 1024, 4096, "before")]
A1111_STRIDE_2 = {0, 11, 13, 36, 38, 98, 100, 158, 160, 168, 170}
A1111_TAG_COUNT = 9176
DIVISOR = 16  # tiny test model: widths 4 … 256


def a1111_blocks():
    """(shortcut, reduce, 3x3, expand) conv indices of every block; shortcut None for identity."""
    for first, count, _, _, at in A1111_STAGES:
        yield (first, first + 1, first + 2, first + 3) if at == "before" else (first + 3, first, first + 1, first + 2)
        start = first + 4
        for block in range(count - 1):
            i = start + 3 * block
            yield None, i, i + 1, i + 2


def a1111_shapes(divisor: int = 1, tags: int = A1111_TAG_COUNT) -> dict[str, tuple[int, ...]]:
    """Every weight/bias shape of the file, [out, in, k, k], built from the stage table."""
    convs = {0: (64 // divisor, 3, 7)}
    channels = 64 // divisor
    blocks = iter(a1111_blocks())
    for _, count, mid, out, _ in A1111_STAGES:
        mid, out = mid // divisor, out // divisor
        for block in range(count):
            shortcut, reduce, spatial, expand = next(blocks)
            if shortcut is not None:
                convs[shortcut] = (out, channels, 1)
            convs[reduce], convs[spatial], convs[expand] = (mid, channels, 1), (mid, mid, 3), (out, mid, 1)
            channels = out
    convs[178] = (tags, channels, 1)
    shapes = {}
    for index, (out, inp, k) in sorted(convs.items()):
        shapes[f"n_Conv_{index}.weight"] = (out, inp, k, k)
        if index != 178:
            shapes[f"n_Conv_{index}.bias"] = (out,)
    return shapes


def tiny_model(tags=("a", "b", "c"), seed=0) -> DeepDanbooruModel:
    torch.manual_seed(seed)
    return DeepDanbooruModel(list(tags), width_divisor=DIVISOR).eval()


def controlled_model(probabilities: dict[str, float]) -> DeepDanbooruModel:
    """A tiny model whose output ignores the image: tag i gets probabilities[tag]."""
    model = tiny_model(probabilities)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.n_Conv_177.bias.fill_(1.0)  # every final feature is relu(0 + 1) = 1
        for i, p in enumerate(probabilities.values()):
            model.n_Conv_178.weight[i, 0] = math.log(p / (1 - p))
    return model


# --------------------------------------------------------------------------- layout


def test_full_size_layout_matches_the_a1111_file_without_allocating():
    with torch.device("meta"):
        model = DeepDanbooruModel([f"tag{i}" for i in range(A1111_TAG_COUNT)])
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert shapes == a1111_shapes()
    assert len(shapes) == 357 and "n_Conv_178.bias" not in shapes
    assert sum(math.prod(s) for s in shapes.values()) == 160_956_544  # ≈ 644 MB of float32
    strides = {int(name.split("_")[-1]): module.stride for name, module in model.named_modules()
               if name.startswith("n_Conv_")}
    assert {i for i, s in strides.items() if s == (2, 2)} == A1111_STRIDE_2
    assert all(s in ((1, 1), (2, 2)) for s in strides.values())
    assert all(module.padding == (0, 0) for module in model.modules() if isinstance(module, torch.nn.Conv2d))


def test_tiny_model_keeps_names_and_structure():
    assert {k: tuple(v.shape) for k, v in tiny_model().state_dict().items()} == a1111_shapes(DIVISOR, 3)
    with pytest.raises(ValueError, match="width_divisor"):
        DeepDanbooruModel(["a"], width_divisor=3)


def test_same_padding_is_a1111s_fixed_padding_at_512():
    def pads(size, kernel, stride):
        padded = _same_pad(torch.zeros(1, 1, size, size), kernel, stride, value=1.0)[0, 0]
        column, row = padded[:, padded.shape[1] // 2], padded[padded.shape[0] // 2]
        assert torch.equal(column, row)  # same on both axes
        return tuple(column.tolist())

    def fixed(size, before, after):
        return tuple([1.0] * before + [0.0] * size + [1.0] * after)

    assert pads(512, 7, 2) == fixed(512, 2, 3)  # stem: F.pad [2, 3, 2, 3]
    assert pads(256, 3, 2) == fixed(256, 0, 1)  # before the max-pool: [0, 1, 0, 1] of -inf
    for size in (128, 64, 32, 16, 8):
        assert pads(size, 3, 2) == fixed(size, 0, 1)  # strided 3x3: [0, 1, 0, 1]
        assert pads(size, 3, 1) == fixed(size, 1, 1)  # other 3x3: [1, 1, 1, 1]


def reference_forward(weights: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """The forward pass written the way A1111's file spells it: fixed pads, conv list by index."""
    def conv(i, x):
        return F.conv2d(x, weights[f"n_Conv_{i}.weight"], weights.get(f"n_Conv_{i}.bias"),
                        stride=2 if i in A1111_STRIDE_2 else 1)

    x = F.pad(images.permute(0, 3, 1, 2), [2, 3, 2, 3])
    x = F.relu(conv(0, x))
    x = F.max_pool2d(F.pad(x, [0, 1, 0, 1], value=float("-inf")), 3, 2)
    for shortcut, reduce, spatial, expand in a1111_blocks():
        h = F.relu(conv(reduce, x))
        h = F.pad(h, [0, 1, 0, 1] if spatial in A1111_STRIDE_2 else [1, 1, 1, 1])
        h = conv(expand, F.relu(conv(spatial, h)))
        x = F.relu(h + (x if shortcut is None else conv(shortcut, x)))
    return torch.sigmoid(F.avg_pool2d(conv(178, x), x.shape[-1]).flatten(1))


def well_scaled_tiny_model(tags: int = 7, seed: int = 2) -> DeepDanbooruModel:
    """Random weights whose output depends visibly on the image (He init, damped residual
    branches): PyTorch's default init fades the image out over 53 blocks."""
    model = tiny_model(tags=[f"t{i}" for i in range(tags)])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * math.sqrt(2 / fan_in))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
                    if module.stride == (1, 1) and module.out_channels > module.in_channels:
                        module.weight.mul_(0.2)  # a block's expand conv (or an unstrided projection)
        model.n_Conv_178.weight.mul_(0.3)
    return model


def test_forward_matches_a_reference_written_from_a1111s_layer_list():
    model = well_scaled_tiny_model()
    generator = torch.Generator().manual_seed(1)
    ramp = torch.linspace(0, 1, 512)
    images = (0.5 * ramp[None, :, None, None] * ramp[None, None, :, None]
              + 0.5 * torch.rand(1, 512, 512, 3, generator=generator))
    with torch.inference_mode():
        ours = model(images)
        expected = reference_forward(model.state_dict(), images)
        mirrored = model(images.flip(2))
    assert ours.shape == (1, 7)
    assert torch.allclose(ours, expected, atol=1e-5, rtol=1e-4)
    assert ((ours > 0.02) & (ours < 0.98)).any()  # not saturated,
    assert (ours - mirrored).abs().max() > 1e-3  # and the image matters: the comparison means something


# --------------------------------------------------------------------------- loading


def save_model(model: DeepDanbooruModel, path):
    state = model.state_dict()  # an OrderedDict, as in the real file
    state["tags"] = list(model.tags)
    torch.save(state, path)
    return path


def test_file_loads_through_the_restricted_unpickler_with_its_tags(tmp_path):
    original = controlled_model({"1girl": 0.9, "solo": 0.7, "rating:safe": 0.95, "hat": 0.2})
    path = save_model(original, tmp_path / "model-resnet_custom_v3.pt")
    model = load_deepbooru_file(path)
    assert model.tags == ["1girl", "solo", "rating:safe", "hat"]
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for key, value in original.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert tag_image(model, Image.new("RGB", (300, 200), "red"), TagOptions()) == "1girl, solo"


def test_load_state_dict_keeps_tensors_only_so_the_tags_need_load_torch_file(tmp_path):
    path = save_model(tiny_model(), tmp_path / "model.pt")
    weights = load_state_dict(path)
    assert "tags" not in weights
    with pytest.raises(ValueError, match="'tags' entry"):
        load_deepbooru(weights)
    assert load_deepbooru({**weights, "tags": ["a", "b", "c"]}).tags == ["a", "b", "c"]


def test_a_file_with_code_in_it_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "model.pt"
    torch.save({**tiny_model().state_dict(), "tags": ["a", "b", "c"], "x": Payload()}, path,
               pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(UnsafeFileError):
        load_deepbooru_file(path)


def test_strict_key_and_shape_check_names_the_problem():
    state = {**tiny_model().state_dict(), "tags": ["a", "b", "c"]}
    missing = {k: v for k, v in state.items() if k != "n_Conv_100.bias"}
    with pytest.raises(ValueError, match=r"missing keys: n_Conv_100\.bias"):
        load_deepbooru(missing)
    with pytest.raises(ValueError, match=r"unexpected keys: n_Conv_179\.weight"):
        load_deepbooru({**state, "n_Conv_179.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"n_Conv_178\.weight is \[3, 256, 1, 1\], expected \[4, 256, 1, 1\]"):
        load_deepbooru({**state, "tags": ["a", "b", "c", "d"]})  # tag list and last layer disagree
    with pytest.raises(ValueError, match="n_Conv_0.weight"):
        load_deepbooru({"tags": [], "model.diffusion_model.x": torch.zeros(1)})


# --------------------------------------------------------------------------- tag text

PROBS = {"long_hair": 0.91, "smile": 0.6, "1girl": 0.99, "hat": 0.49, "rating:safe": 0.97,
         "holding_(object)": 0.8, "star_[symbol]": 0.7, "back\\slash": 0.55}


def text(**settings) -> str:
    return format_tags(list(PROBS), list(PROBS.values()), TagOptions(**settings))


def test_defaults_are_a1111s():
    assert TagOptions() == TagOptions(interrogate_deepbooru_score_threshold=0.5, deepbooru_sort_alpha=True,
                                      deepbooru_use_spaces=True, deepbooru_escape=True,
                                      deepbooru_filter_tags="", interrogate_return_ranks=False)


def test_threshold_keeps_scores_at_or_above_it_and_never_writes_ratings():
    assert text() == "1girl, back\\\\slash, holding \\(object\\), long hair, smile, star [symbol]"
    assert text(interrogate_deepbooru_score_threshold=0.9) == "1girl, long hair"
    assert format_tags(["a", "b"], [0.5, 0.4999], TagOptions()) == "a"
    assert "rating" not in text(interrogate_deepbooru_score_threshold=0.0)


def test_sort_by_score_is_highest_first():
    assert text(deepbooru_sort_alpha=False, deepbooru_escape=False) == \
        "1girl, long hair, holding (object), star [symbol], smile, back\\slash"


def test_underscores_escaping_and_ranks():
    assert text(deepbooru_use_spaces=False, deepbooru_escape=False, interrogate_deepbooru_score_threshold=0.65) == \
        "1girl, holding_(object), long_hair, star_[symbol]"
    # A1111 escapes backslash and round brackets only; square brackets stay as they are.
    assert text(deepbooru_use_spaces=False, interrogate_deepbooru_score_threshold=0.65) == \
        "1girl, holding_\\(object\\), long_hair, star_[symbol]"
    assert text(interrogate_return_ranks=True, interrogate_deepbooru_score_threshold=0.75) == \
        "(1girl:0.990), (holding \\(object\\):0.800), (long hair:0.910)"


def test_filter_list_matches_tags_written_with_spaces_or_underscores():
    assert text(deepbooru_filter_tags=" long hair , smile,holding_(object)", deepbooru_escape=False) == \
        "1girl, back\\slash, star [symbol]"


# --------------------------------------------------------------------------- image input


def test_image_is_fitted_into_512_and_the_bars_are_filled_with_its_edges():
    picture = Image.new("RGBA", (400, 200), (0, 0, 255, 0))
    picture.paste((255, 0, 0, 255), (0, 0, 400, 100))  # top half red, bottom half transparent blue
    x = image_to_input(picture)
    assert x.shape == (1, 512, 512, 3) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert torch.allclose(x[0, 0, 256], torch.tensor([1.0, 0.0, 0.0]), atol=0.02)  # top bar: red edge
    assert torch.allclose(x[0, 511, 256], torch.tensor([0.0, 0.0, 1.0]), atol=0.02)  # alpha dropped


def test_tag_image_end_to_end_with_known_probabilities():
    model = controlled_model({"blue_sky": 0.987654, "cloud": 0.55, "rating:general": 0.9, "tree": 0.3})
    options = TagOptions(deepbooru_sort_alpha=False, interrogate_return_ranks=True)
    assert tag_image(model, Image.new("L", (64, 640)), options) == "(blue sky:0.988), (cloud:0.550)"
