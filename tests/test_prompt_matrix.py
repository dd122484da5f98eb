"""The Prompt matrix script with a fake runner whose images encode prompt and seed."""

import hashlib

import pytest
from PIL import Image

from modules.core.generation.request import Txt2ImgRequest
from modules.service.processing import Processed, Processing
from modules.service.scripts.prompt_matrix import PromptMatrix, matrix_prompts

SIZE = 64


def colour(prompt, negative, seed):
    return tuple(hashlib.md5(repr((prompt, negative, seed)).encode()).digest()[:3])


class FakeRunner:
    def __init__(self, interrupt_at=None):
        self.jobs = []
        self.interrupt_at = interrupt_at

    def __call__(self, p):
        self.jobs.append(p)
        return Processed(images=[Image.new("RGB", (p.width, p.height), colour(p.prompt, p.negative_prompt, p.seed))],
                         infotexts=[f"{p.prompt}\nSeed: {p.seed}"], all_prompts=[p.prompt],
                         all_negative_prompts=[p.negative_prompt], all_seeds=[p.seed], all_subseeds=[p.subseed],
                         width=p.width, height=p.height, interrupted=len(self.jobs) == self.interrupt_at)


def make_p(runner, **fields):
    request = Txt2ImgRequest(**{"prompt": "a cat|red|hat", "seed": 100, "width": SIZE, "height": SIZE, **fields})
    p = Processing(request, is_img2img=False, runner=runner)
    p.saved_grids = []
    p.save_grid = lambda image, info, basename: p.saved_grids.append((image, info, basename)) or f"{basename}.png"
    return p


def run(p, put_at_start=False, different_seeds=False, prompt_type="positive", delimiter="comma", margin=0):
    return PromptMatrix().run(p, put_at_start, different_seeds, prompt_type, delimiter, margin)


def test_combinations_follow_the_bits_of_the_index():
    assert matrix_prompts("a cat|red|hat") == ["a cat", "a cat, red", "a cat, hat", "a cat, red, hat"]
    assert matrix_prompts("a cat|red|hat", put_at_start=True) == ["a cat", "red, a cat", "hat, a cat", "red, hat, a cat"]
    assert matrix_prompts("cat| red,|hat", delimiter=" ") == ["cat", "cat red", "cat hat", "cat red hat"]
    assert matrix_prompts("cat|red ,") == ["cat", "cat, red "]  # A1111 strips spaces, then commas only
    assert len(matrix_prompts("a|b|c|d|e")) == 16
    assert matrix_prompts("no bars") == ["no bars"]


def test_ui_controls_in_a1111s_order():
    controls = PromptMatrix().ui(False)
    assert [c.value for c in controls] == [False, False, "positive", "comma", 0]
    assert controls[2].choices == ("positive", "negative") and controls[3].choices == ("comma", "space")
    assert PromptMatrix().title() == "Prompt matrix"


def test_one_job_per_combination_with_one_seed():
    runner = FakeRunner()
    p = make_p(runner, batch_size=3, n_iter=2)
    result = run(p)
    assert [j.prompt for j in runner.jobs] == ["a cat", "a cat, red", "a cat, hat", "a cat, red, hat"]
    assert {j.seed for j in runner.jobs} == {100}
    assert all(j.batch_size == 1 and j.n_iter == 1 and j.do_not_save_grid for j in runner.jobs)
    assert len(result.images) == 5 and result.index_of_first_image == 1
    assert result.all_prompts == [j.prompt for j in runner.jobs]


def test_different_seeds_count_up_and_random_seed_is_fixed_first():
    runner = FakeRunner()
    run(make_p(runner), different_seeds=True)
    assert [j.seed for j in runner.jobs] == [100, 101, 102, 103]
    runner = FakeRunner()
    p = make_p(runner, seed=-1)
    run(p)
    assert p.seed != -1 and {j.seed for j in runner.jobs} == {p.seed}


def test_negative_prompt_matrix_leaves_the_prompt():
    runner = FakeRunner()
    run(make_p(runner, prompt="a cat", negative_prompt="blurry|dark"), prompt_type="negative")
    assert [(j.prompt, j.negative_prompt) for j in runner.jobs] == [("a cat", "blurry"), ("a cat", "blurry, dark")]


def test_grid_geometry_legend_and_saving():
    runner = FakeRunner()
    p = make_p(runner, prompt="cat|a|b|c")  # 3 parts: 8 images, 2 rows of 4
    result = run(p, margin=6)
    grid = result.images[0]
    plain_w, plain_h = 4 * SIZE + 3 * 6, 2 * SIZE + 6
    pad_left = SIZE * 3 // 4
    assert grid.width == plain_w + pad_left and grid.height > plain_h
    pad_top = grid.height - plain_h
    # column k of row r holds combination r*4 + k (parts a, b across, c down)
    for index, job in enumerate(runner.jobs):
        row, col = divmod(index, 4)
        x = pad_left + col * (SIZE + 6) + SIZE // 2
        y = pad_top + row * (SIZE + 6) + SIZE // 2
        assert grid.getpixel((x, y)) == colour(job.prompt, "", 100)
    assert runner.jobs[5].prompt == "cat, a, c"
    assert p.saved_grids == [(grid, result.infotexts[0], "prompt_matrix")]
    assert result.infotexts[0] == result.infotexts[1] == "cat\nSeed: 100"
    assert result.saved[0] == "prompt_matrix.png"


def test_two_parts_make_a_two_by_two_grid():
    result = run(make_p(FakeRunner()))
    assert result.images[0].width == 2 * SIZE + SIZE * 3 // 4


def test_interrupt_stops_and_keeps_the_images_so_far():
    runner = FakeRunner(interrupt_at=2)
    result = run(make_p(runner))
    assert len(runner.jobs) == 2 and result.interrupted and len(result.images) == 3


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="prompt type"):
        run(make_p(FakeRunner()), prompt_type="both")
    with pytest.raises(ValueError, match="joining char"):
        run(make_p(FakeRunner()), delimiter="tab")
