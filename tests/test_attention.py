"""Cross-attention backends: each choice sets the U-Net's processors, the pictures agree across
backends (they compute the same attention), flags win over the setting, and xformers without the
package falls back to SDPA with a clear message."""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, SlicedAttnProcessor

from modules.core.generation.request import Txt2ImgRequest
from modules.core.models.attention import SdpaWithoutMemEfficient, apply_attention, choice_from_flags, processor_kinds

REQUEST = Txt2ImgRequest(prompt="a red cat", seed=4, steps=3, width=64, height=64, sampler_name="Euler")


@pytest.mark.parametrize("choice, kind", [
    ("Automatic", AttnProcessor2_0), ("sdp", AttnProcessor2_0), ("sdp-no-mem", SdpaWithoutMemEfficient),
    ("None", AttnProcessor), ("Doggettx", SlicedAttnProcessor), ("sub-quadratic", SlicedAttnProcessor),
    ("V1", SlicedAttnProcessor), ("InvokeAI", SlicedAttnProcessor),
])
def test_each_choice_sets_its_processors_and_gives_the_same_picture(service, choice, kind):
    reference = np.asarray(service.txt2img(REQUEST, save_images=False).result.images[0].image).astype(int)
    service.settings.set("cross_attention_optimization", choice, persist=False)
    picture = np.asarray(service.txt2img(REQUEST, save_images=False).result.images[0].image).astype(int)
    assert processor_kinds(service.models.loaded.model.unet) == {kind}
    assert np.abs(picture - reference).max() <= 1  # the same attention, up to float rounding


def test_xformers_without_the_package_falls_back_with_a_message(service, caplog):
    unet = service.models.ensure_loaded(None).model.unet
    with caplog.at_level(logging.WARNING, logger="hanga"):
        assert apply_attention(unet, "xformers", torch.device("cpu")) == "sdp"
    assert "xformers was asked for but" in caplog.text and "using PyTorch's scaled-dot-product attention" in caplog.text
    assert processor_kinds(unet) == {AttnProcessor2_0}
    with pytest.raises(ValueError, match="cross_attention_optimization must be one of"):
        apply_attention(unet, "flash-magic", torch.device("cpu"))


def test_flags_choose_the_backend():
    def flags(**on):
        return argparse.Namespace(**on)

    assert choice_from_flags(flags()) is None
    assert choice_from_flags(flags(xformers=True, opt_sdp_attention=True)) == "xformers"
    assert choice_from_flags(flags(opt_sdp_no_mem_attention=True)) == "sdp-no-mem"
    assert choice_from_flags(flags(opt_sub_quad_attention=True)) == "sub-quadratic"
    assert choice_from_flags(flags(opt_split_attention_v1=True)) == "Doggettx"
    assert choice_from_flags(flags(disable_opt_split_attention=True)) == "None"


def test_the_compiled_fast_path_gives_the_eager_picture(service):
    """torch.compile on the CPU (inductor with the system C compiler): same picture as eager."""
    from modules.core.models.fast_path import is_compiled

    eager = np.asarray(service.txt2img(REQUEST, save_images=False).result.images[0].image).astype(int)
    service.settings.set("compile_unet", True, persist=False)
    compiled = np.asarray(service.txt2img(REQUEST, save_images=False).result.images[0].image).astype(int)
    assert is_compiled(service.models.loaded.model.unet)
    assert np.abs(compiled - eager).max() <= 1
