"""Live previews: the "Approx cheap" latent → RGB map (modules/core/preview.py) and the preview
plumbing of the job's progress state (modules/service/progress.py)."""

import numpy as np
import pytest
import torch
from PIL import Image

from modules.core.preview import cheap_approximation
from modules.service.progress import JobState, PreviewPlan

# The published "Approx cheap" tables (latent channel → R, G, B), written here once as the reference.
SD_TABLE = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
SDXL_TABLE = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)


def to_byte(value: float) -> int:
    return round(min(1.0, max(0.0, value * 0.5 + 0.5)) * 255)


def expected_pixel(table, channels) -> tuple[int, int, int]:
    return tuple(to_byte(sum(table[c][rgb] * channels[c] for c in range(4))) for rgb in range(3))


def test_zero_latent_is_mid_grey():
    picture = cheap_approximation(torch.zeros(4, 6, 6))
    assert picture.mode == "RGB"
    grey = round(0.5 * 255)
    assert set(picture.getdata()) == {(grey, grey, grey)}


@pytest.mark.parametrize("sdxl, table", [(False, SD_TABLE), (True, SDXL_TABLE)])
@pytest.mark.parametrize("channel", range(4))
def test_one_channel_gives_its_row_of_the_table(sdxl, table, channel):
    latent = torch.zeros(4, 3, 3)
    latent[channel] = 1.0
    picture = cheap_approximation(latent, sdxl=sdxl)
    want = tuple(to_byte(coefficient) for coefficient in table[channel])
    assert set(picture.getdata()) == {want}


def test_sdxl_uses_the_other_table():
    latent = torch.zeros(4, 2, 2)
    latent[1] = 1.0
    sd, sdxl = cheap_approximation(latent).getpixel((0, 0)), cheap_approximation(latent, sdxl=True).getpixel((0, 0))
    assert sd == tuple(to_byte(v) for v in SD_TABLE[1])
    assert sdxl == tuple(to_byte(v) for v in SDXL_TABLE[1])
    assert sd != sdxl


def test_values_are_clamped():
    latent = torch.zeros(4, 1, 1)
    latent[0] = 100.0  # far out of range: every SD channel-0 coefficient is positive
    assert cheap_approximation(latent).getpixel((0, 0)) == (255, 255, 255)
    latent[0] = -100.0
    assert cheap_approximation(latent).getpixel((0, 0)) == (0, 0, 0)


def test_mixed_latent_maps_each_position_on_its_own():
    height, width = 3, 5  # not square: a transposed picture would have the wrong size
    generator = torch.Generator().manual_seed(1)
    latent = (torch.rand(4, height, width, generator=generator) - 0.5) * 1.2
    for sdxl, table in ((False, SD_TABLE), (True, SDXL_TABLE)):
        picture = cheap_approximation(latent, sdxl=sdxl)
        assert picture.size == (width, height)
        pixels = np.asarray(picture)
        for y in range(height):
            for x in range(width):
                channels = [float(latent[c, y, x]) for c in range(4)]
                want = np.array(expected_pixel(table, channels))
                # float32 against float64 arithmetic may round a value sitting on .5 the other way
                assert np.abs(pixels[y, x].astype(int) - want).max() <= 1, (y, x)


def test_batch_uses_the_first_latent_and_size_is_latent_size():
    batch = torch.zeros(2, 4, 7, 9)
    batch[0, 0] = 1.0
    batch[1, 3] = 1.0
    picture = cheap_approximation(batch)
    assert picture.size == (9, 7)
    assert set(picture.getdata()) == {tuple(to_byte(v) for v in SD_TABLE[0])}


def test_half_precision_and_grad_latents_are_accepted():
    latent = torch.zeros(4, 2, 2, dtype=torch.float16)
    latent[2] = 1.0
    assert cheap_approximation(latent).getpixel((1, 1)) == tuple(to_byte(v) for v in SD_TABLE[2])
    with_grad = torch.zeros(4, 2, 2, requires_grad=True)
    assert cheap_approximation(with_grad).getpixel((0, 0)) == (to_byte(0.0),) * 3


@pytest.mark.parametrize("shape", [(3, 4, 4), (1, 3, 4, 4), (16, 4, 4)])
def test_wrong_channel_count_raises(shape):
    with pytest.raises(ValueError):
        cheap_approximation(torch.zeros(shape))


# -- JobState ------------------------------------------------------------------------------------------

class Renderer:
    def __init__(self, fail: bool = False):
        self.calls: list[torch.Tensor] = []
        self.pictures: list[Image.Image] = []
        self.fail = fail

    def __call__(self, latent):
        self.calls.append(latent)
        if self.fail:
            raise RuntimeError("cannot draw")
        picture = Image.new("RGB", (2, 2), (len(self.calls), 0, 0))
        self.pictures.append(picture)
        return picture


def latent_for(step: int) -> torch.Tensor:
    return torch.full((1, 4, 2, 2), float(step))


def test_preview_every_n_steps():
    state = JobState(console_bar=False)
    render = Renderer()
    state.begin("txt2img", preview=PreviewPlan(every_n=2, render=render))
    assert state.preview() == (0, None)
    state.start_batch(0, 1, 5)
    seen = []
    for i in range(5):
        state.step(i, latent_for(i))
        seen.append(state.preview())
    # render runs after the 2nd and 4th steps (i = 1 and 3) with those steps' latents
    assert [float(latent[0, 0, 0, 0]) for latent in render.calls] == [1.0, 3.0]
    assert seen[0] == (0, None)
    ids = [preview_id for preview_id, _ in seen]
    assert ids[1] > ids[0] and ids[3] > ids[1]
    assert ids[2] == ids[1] and ids[4] == ids[3]
    assert seen[1][1] is render.pictures[0]
    assert seen[4][1] is render.pictures[1]
    snapshot = state.snapshot()
    assert snapshot.steps_done == 5
    assert snapshot.sampling_step == 5 and snapshot.sampling_steps == 5
    assert snapshot.preview_id == ids[4]


def test_steps_done_counts_the_whole_job_across_batches():
    state = JobState(console_bar=False)
    state.begin("txt2img")
    for batch in range(3):
        state.start_batch(batch, 3, 4)
        for i in range(4):
            state.step(i, latent_for(i))
        assert state.snapshot().sampling_step == 4
    assert state.snapshot().steps_done == 12
    assert state.preview() == (0, None)  # no plan, no preview
    state.begin("img2img")
    assert state.snapshot().steps_done == 0


def test_a_failing_render_turns_previews_off_for_the_job():
    state = JobState(console_bar=False)
    render = Renderer(fail=True)
    state.begin("txt2img", preview=PreviewPlan(every_n=1, render=render))
    state.start_batch(0, 1, 4)
    for i in range(4):
        state.step(i, latent_for(i))  # must not raise
    assert len(render.calls) == 1
    assert state.preview() == (0, None)
    assert state.snapshot().steps_done == 4

    working = Renderer()  # the next job gets previews again
    state.begin("txt2img", preview=PreviewPlan(every_n=1, render=working))
    state.start_batch(0, 1, 2)
    state.step(0, latent_for(0))
    assert len(working.calls) == 1
    assert state.preview()[1] is working.pictures[0]


def test_end_clears_the_preview():
    state = JobState(console_bar=False)
    render = Renderer()
    state.begin("txt2img", preview=PreviewPlan(every_n=1, render=render))
    state.start_batch(0, 1, 2)
    state.step(0, latent_for(0))
    assert state.preview()[1] is render.pictures[0]
    state.end()
    assert state.preview()[1] is None
    assert not state.snapshot().active
    state.step(1, latent_for(1))  # a stray step after the job: the plan is gone
    assert len(render.calls) == 1


def test_every_n_zero_draws_nothing():
    state = JobState(console_bar=False)
    render = Renderer()
    state.begin("txt2img", preview=PreviewPlan(every_n=0, render=render))
    state.start_batch(0, 1, 3)
    for i in range(3):
        state.step(i, latent_for(i))
    assert render.calls == []
    assert state.preview() == (0, None)
