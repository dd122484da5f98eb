"""Seeded noise (spec §4.1, §4.2, §4.4): per-image generators, ENSD, variation seeds, seed resize.

On this CPU-only machine the "GPU" source draws on the CPU device, so every expectation below is a
plain ``torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))``.
"""

import pytest
import torch

from modules.core.rng import ImageRNG, fix_seed, slerp

CPU = torch.device("cpu")
SHAPE = (4, 8, 8)  # a 64×64 image's latent
MAX_SEED = 4294967294


def draws(seed, *shapes):
    """Consecutive draws from one fresh CPU generator."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return [torch.randn(shape, generator=generator) for shape in shapes]


def first_draw(seed, shape=SHAPE):
    return draws(seed, shape)[0]


def spec_slerp(v, low, high):
    """§4.2: normalize along dim 1 (H), fallback with reversed weights when mean(dot) > 0.9995."""
    low_n = low / torch.norm(low, dim=1, keepdim=True)
    high_n = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_n * high_n).sum(1)
    if dot.mean() > 0.9995:
        return low * v + high * (1 - v)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - v) * omega) / so).unsqueeze(1) * low + (torch.sin(v * omega) / so).unsqueeze(1) * high


# ---------------------------------------------------------------- per-image generators


@pytest.mark.parametrize("source", ["GPU", "CPU"])
def test_first_draw_is_one_generator_per_image(source):
    rng = ImageRNG(SHAPE, [123, 98765], CPU, source=source)
    latent = rng.next()
    assert latent.shape == (2, *SHAPE)
    assert latent.dtype == torch.float32
    assert latent.device.type == "cpu"
    assert torch.equal(latent, torch.stack([first_draw(123), first_draw(98765)]))


def test_second_draw_continues_each_images_stream():
    rng = ImageRNG(SHAPE, [5, 6], CPU)
    a5, b5, c5 = draws(5, SHAPE, SHAPE, SHAPE)
    a6, b6, c6 = draws(6, SHAPE, SHAPE, SHAPE)
    assert torch.equal(rng.next(), torch.stack([a5, a6]))
    assert torch.equal(rng.next(), torch.stack([b5, b6]))
    assert torch.equal(rng.next(), torch.stack([c5, c6]))


def test_batch_rows_equal_single_seed_rngs():
    seed = 3_000_000_000
    batch = ImageRNG(SHAPE, [seed, seed + 1], CPU)
    single = [ImageRNG(SHAPE, [seed], CPU), ImageRNG(SHAPE, [seed + 1], CPU)]
    for _ in range(3):
        rows = batch.next()
        assert torch.equal(rows[0], single[0].next()[0])
        assert torch.equal(rows[1], single[1].next()[0])


def test_ensd_reseeds_after_the_initial_latent():
    rng = ImageRNG(SHAPE, [42, 43], CPU, eta_noise_seed_delta=31337)
    assert torch.equal(rng.next(), torch.stack([first_draw(42), first_draw(43)]))
    e42 = draws(42 + 31337, SHAPE, SHAPE)
    e43 = draws(43 + 31337, SHAPE, SHAPE)
    assert torch.equal(rng.next(), torch.stack([e42[0], e43[0]]))
    assert torch.equal(rng.next(), torch.stack([e42[1], e43[1]]))


def test_ensd_zero_continues_the_seed_stream():
    rng = ImageRNG(SHAPE, [42], CPU, eta_noise_seed_delta=0)
    rng.next()
    assert torch.equal(rng.next()[0], draws(42, SHAPE, SHAPE)[1])


# ---------------------------------------------------------------- slerp


def test_slerp_formula_normalizes_along_dim_1():
    low, high = first_draw(1), first_draw(2)
    for v in (0.0, 0.25, 0.5, 0.9, 1.0):
        torch.testing.assert_close(slerp(v, low, high), spec_slerp(v, low, high), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(slerp(0.0, low, high), low, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(slerp(1.0, low, high), high, rtol=1e-5, atol=1e-6)


def test_slerp_is_not_normalized_over_another_axis():
    # the dim-1 reading gives a different answer from a whole-tensor slerp on anisotropic inputs
    low = first_draw(1) * torch.linspace(0.2, 3.0, 8)[None, :, None]
    high = first_draw(2) * torch.linspace(3.0, 0.2, 8)[None, None, :]
    expected = spec_slerp(0.3, low, high)
    torch.testing.assert_close(slerp(0.3, low, high), expected, rtol=1e-5, atol=1e-6)
    flat_dot = torch.dot(low.flatten() / low.norm(), high.flatten() / high.norm())
    omega = torch.acos(flat_dot)
    whole = (torch.sin(0.7 * omega) * low + torch.sin(0.3 * omega) * high) / torch.sin(omega)
    assert not torch.allclose(expected, whole, rtol=1e-3, atol=1e-3)


def test_slerp_of_identical_tensors_uses_the_fallback():
    low = first_draw(1)
    out = slerp(0.3, low, low.clone())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, low, rtol=1e-6, atol=1e-6)


def test_slerp_fallback_has_reversed_weights():
    # nearly parallel columns (mean dot > 0.9995): result is low·v + high·(1−v), not (1−v)·low + v·high
    low = first_draw(1, (4, 8, 8)).double()
    high = low + 0.01 * first_draw(2, (4, 8, 8)).double()
    low_n = low / low.norm(dim=1, keepdim=True)
    high_n = high / high.norm(dim=1, keepdim=True)
    assert (low_n * high_n).sum(1).mean() > 0.9995
    out = slerp(0.2, low, high)
    torch.testing.assert_close(out, low * 0.2 + high * 0.8, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(out, low * 0.8 + high * 0.2, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- variation seed


def test_variation_seed_slerps_toward_the_subseed_noise():
    rng = ImageRNG(SHAPE, [10, 10], CPU, subseeds=[777, 778], subseed_strength=0.3)
    latent = rng.next()
    expected = torch.stack([
        spec_slerp(0.3, first_draw(10), first_draw(777)),
        spec_slerp(0.3, first_draw(10), first_draw(778)),
    ])
    torch.testing.assert_close(latent, expected, rtol=1e-5, atol=1e-6)
    # the subseed noise does not consume the image's own generator
    torch.testing.assert_close(rng.next()[0], draws(10, SHAPE, SHAPE)[1])


def test_zero_strength_ignores_subseeds():
    rng = ImageRNG(SHAPE, [10], CPU, subseeds=[777], subseed_strength=0.0)
    assert torch.equal(rng.next()[0], first_draw(10))


def test_full_strength_gives_the_subseed_noise():
    rng = ImageRNG(SHAPE, [10], CPU, subseeds=[777], subseed_strength=1.0)
    torch.testing.assert_close(rng.next()[0], first_draw(777), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- resize seed from


def test_resize_from_a_smaller_size_pastes_the_centre():
    # 64×64 image; "resize seed from" 32 wide × 48 high → S' = (4, 6, 4); dx = 2, dy = 1
    seed = 99
    rng = ImageRNG(SHAPE, [seed], CPU, seed_resize_from=(32, 48))
    small = first_draw(seed, (4, 6, 4))  # A1111: randn(seed, S') after torch.manual_seed(seed)
    full, step = draws(seed, SHAPE, SHAPE)  # the image's own generator: full-size noise, then steps
    expected = full.clone()
    expected[:, 1:7, 2:6] = small
    assert torch.equal(rng.next()[0], expected)
    assert torch.equal(rng.next()[0], step)


def test_resize_from_a_larger_size_crops_its_centre():
    # "resize seed from" 96 wide × 80 high → S' = (4, 10, 12); dx = −2, dy = −1: the whole latent is
    # the centre crop small[:, 1:9, 2:10]
    seed = 99
    rng = ImageRNG(SHAPE, [seed], CPU, seed_resize_from=(96, 80))
    small = first_draw(seed, (4, 10, 12))
    step = draws(seed, SHAPE, SHAPE)[1]
    assert torch.equal(rng.next()[0], small[:, 1:9, 2:10])
    assert torch.equal(rng.next()[0], step)


def test_resize_from_an_odd_larger_size_follows_a1111_crop():
    # S' = (4, 11, 11) (88×88): dx = dy = (8 − 11) // 2 = −2, and A1111's rng.py pastes
    # w = h = 11 + 2·(−2) = 7 values, leaving the last row and column from the full-size noise.
    seed = 99
    rng = ImageRNG(SHAPE, [seed], CPU, seed_resize_from=(88, 88))
    small = first_draw(seed, (4, 11, 11))
    expected = draws(seed, SHAPE)[0].clone()
    expected[:, 0:7, 0:7] = small[:, 2:9, 2:9]
    assert torch.equal(rng.next()[0], expected)


def test_resize_from_the_same_size_changes_nothing():
    rng = ImageRNG(SHAPE, [99], CPU, seed_resize_from=(64, 64))
    assert torch.equal(rng.next()[0], first_draw(99))
    assert torch.equal(rng.next()[0], draws(99, SHAPE, SHAPE)[1])


def test_resize_with_variation_seed_slerps_at_the_resize_size():
    seed, subseed = 99, 5
    rng = ImageRNG(SHAPE, [seed], CPU, subseeds=[subseed], subseed_strength=0.5, seed_resize_from=(32, 48))
    small = spec_slerp(0.5, first_draw(seed, (4, 6, 4)), first_draw(subseed, (4, 6, 4)))
    expected = first_draw(seed).clone()
    expected[:, 1:7, 2:6] = small
    torch.testing.assert_close(rng.next()[0], expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- fix_seed


@pytest.mark.parametrize("value", [-1, "", None])
def test_fix_seed_random(value):
    seeds = {fix_seed(value) for _ in range(5)}
    for seed in seeds:
        assert isinstance(seed, int)
        assert 0 <= seed < MAX_SEED
    assert len(seeds) > 1


@pytest.mark.parametrize("value", [0, 1, 12345, 4294967293])
def test_fix_seed_keeps_a_given_seed(value):
    assert fix_seed(value) == value
