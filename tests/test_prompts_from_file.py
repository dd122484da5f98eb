"""The "Prompts from file or textbox" script: line parsing and one job per line."""

import pytest
from PIL import Image

from modules.core.generation.request import Txt2ImgRequest
from modules.service.processing import Processed, Processing
from modules.service.scripts.prompts_from_file import PromptsFromFile, parse_line, read_prompt_file


class FakeRunner:
    def __init__(self, interrupt_at=None):
        self.jobs = []
        self.interrupt_at = interrupt_at

    def __call__(self, p):
        self.jobs.append(p)
        seeds = [p.seed + k for k in range(p.batch_size * p.n_iter)]
        return Processed(images=[Image.new("RGB", (8, 8)) for _ in seeds],
                         infotexts=[f"{p.prompt}\nSeed: {s}" for s in seeds], all_prompts=[p.prompt] * len(seeds),
                         all_negative_prompts=[p.negative_prompt] * len(seeds), all_seeds=seeds,
                         all_subseeds=[p.subseed] * len(seeds), interrupted=len(self.jobs) == self.interrupt_at)


def make_p(runner, **fields):
    return Processing(Txt2ImgRequest(**{"prompt": "", "seed": 7, **fields}), is_img2img=False, runner=runner)


def run(p, text="", iterate=False, same_seed=False, position="start", file=None):
    return PromptsFromFile().run(p, iterate, same_seed, position, text, file)


# ---- parse_line ------------------------------------------------------------------------------------

def test_plain_lines_are_prompts():
    assert parse_line("  a cat, in a hat ") == {"prompt": "a cat, in a hat"}
    assert parse_line("a photo --steps 30") == {"prompt": "a photo --steps 30"}  # not options: a prompt


def test_options_are_typed():
    line = ('--prompt "a cat" --negative_prompt ugly --steps 30 --cfg_scale 6.5 --seed 42 --subseed 3 '
            '--subseed_strength 0.25 --width 768 --height 512 --batch_size 2 --n_iter 3 '
            '--seed_resize_from_w 640 --seed_resize_from_h 480 --sd_model modelB --outpath_samples out '
            '--outpath_grids grids --prompt_for_display shown --restore_faces true --tiling false '
            '--do_not_save_samples true --do_not_save_grid yes --styles "one, two"')
    assert parse_line(line) == {
        "prompt": "a cat", "negative_prompt": "ugly", "steps": 30, "cfg_scale": 6.5, "seed": 42, "subseed": 3,
        "subseed_strength": 0.25, "width": 768, "height": 512, "batch_size": 2, "n_iter": 3,
        "seed_resize_from_w": 640, "seed_resize_from_h": 480, "sd_model": "modelB", "outpath_samples": "out",
        "outpath_grids": "grids", "prompt_for_display": "shown", "restore_faces": True, "tiling": False,
        "do_not_save_samples": True, "do_not_save_grid": False, "styles": ["one", "two"],
    }
    assert isinstance(parse_line("--steps 30")["steps"], int)


def test_prompt_takes_every_word_until_the_next_option():
    assert parse_line("--prompt a red cat --steps 5 --negative_prompt blurry dark") == {
        "prompt": "a red cat", "steps": 5, "negative_prompt": "blurry dark"}


def test_samplers_by_name_alias_or_index():
    assert parse_line('--sampler_name "euler a"') == {"sampler_name": "Euler a"}
    assert parse_line("--sampler_name k_euler") == {"sampler_name": "Euler"}
    assert parse_line("--sampler_index 0") == {"sampler_name": "DPM++ 2M"}


@pytest.mark.parametrize("line, message", [
    ("--prompt cat --colour red", "unknown option '--colour'"),
    ("--steps", "missing value for option --steps"),
    ("--steps many", "bad value for --steps"),
    ("--sampler_name Nope", "unknown sampler 'Nope'"),
    ("--sampler_index 99", "out of range"),
    ('--prompt "unclosed', "No closing quotation"),
])
def test_bad_lines_name_the_line_and_the_problem(line, message):
    with pytest.raises(ValueError) as error:
        parse_line(line)
    assert message in str(error.value) and repr(line) in str(error.value)


# ---- running ---------------------------------------------------------------------------------------

def test_one_job_per_non_empty_line_with_results_concatenated():
    runner = FakeRunner()
    result = run(make_p(runner, batch_size=2), "a cat\n\n  \n--prompt a dog --steps 12 --seed 100\n")
    assert [j.prompt for j in runner.jobs] == ["a cat", "a dog"]
    assert runner.jobs[1].steps == 12 and runner.jobs[0].steps == 20
    assert len(result.images) == len(result.infotexts) == 4
    assert result.all_prompts == ["a cat", "a cat", "a dog", "a dog"]
    assert result.all_seeds == [7, 8, 100, 101]
    assert all(j.do_not_save_grid for j in runner.jobs)


def test_line_prompts_join_the_main_prompt_at_start_or_end():
    runner = FakeRunner()
    run(make_p(runner, prompt="masterpiece", negative_prompt="ugly"), "a cat\n--prompt a dog --negative_prompt dark")
    assert [(j.prompt, j.negative_prompt) for j in runner.jobs] == [("a cat masterpiece", "ugly"),
                                                                     ("a dog masterpiece", "dark ugly")]
    runner = FakeRunner()
    run(make_p(runner, prompt="masterpiece"), "a cat", position="end")
    assert runner.jobs[0].prompt == "masterpiece a cat"


def test_iterate_seed_moves_by_a_jobs_image_count():
    runner = FakeRunner()
    p = make_p(runner, batch_size=2, n_iter=3)
    run(p, "a\nb\nc", iterate=True)
    assert [j.seed for j in runner.jobs] == [7, 13, 19] and p.seed == 25


def test_random_seed_is_fixed_once_when_asked():
    runner = FakeRunner()
    run(make_p(runner, seed=-1), "a\nb", same_seed=True)
    seeds = {j.seed for j in runner.jobs}
    assert len(seeds) == 1 and seeds != {-1}
    runner = FakeRunner()
    run(make_p(runner, seed=-1), "a\nb")
    assert [j.seed for j in runner.jobs] == [-1, -1]


def test_non_field_options_become_attributes_and_sd_model_an_override():
    runner = FakeRunner()
    run(make_p(runner), '--prompt x --sd_model "modelB.safetensors" --styles "s1,s2" --do_not_save_samples true')
    job = runner.jobs[0]
    assert job.override_settings == {"sd_model_checkpoint": "modelB.safetensors"}
    assert job.styles == ["s1", "s2"] and job.do_not_save_samples is True


def test_invalid_requests_fail_before_the_first_image():
    runner = FakeRunner()
    with pytest.raises(ValueError, match=r"line '--steps 0'.*steps"):
        run(make_p(runner), "a cat\n--steps 0")
    assert runner.jobs == []


def test_file_content_as_bytes_path_or_text(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("a cat\r\n--prompt a dog\n".encode())
    assert read_prompt_file(path.read_bytes()).splitlines() == ["a cat", "--prompt a dog"]
    assert read_prompt_file(str(path)).splitlines() == ["a cat", "--prompt a dog"]
    assert read_prompt_file("one\ntwo") == "one\ntwo"
    assert read_prompt_file(None) is None
    runner = FakeRunner()
    run(make_p(runner), "ignored", file=str(path))
    assert [j.prompt for j in runner.jobs] == ["a cat", "a dog"]


def test_interrupt_stops_at_the_current_line():
    runner = FakeRunner(interrupt_at=1)
    result = run(make_p(runner), "a\nb")
    assert len(runner.jobs) == 1 and result.interrupted and len(result.images) == 1


def test_ui_controls():
    controls = PromptsFromFile().ui(False)
    assert [c.label for c in controls] == ["Iterate seed every line", "Use same random seed for all lines",
                                           "Insert prompts at the", "List of prompt inputs", "Upload prompt inputs"]
    assert controls[2].choices == ("start", "end") and controls[2].value == "start"
