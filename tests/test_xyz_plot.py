"""The X/Y/Z plot script with a fake runner whose images encode the job's fields."""

import hashlib

import pytest
from PIL import Image

from modules.core.generation.request import Txt2ImgRequest
from modules.service.processing import Processed, Processing
from modules.service.scripts.xyz_axes import closest_checkpoint, expand_ranges, parse_axis_values, split_csv
from modules.service.scripts.xyz_plot import XYZPlot

SIZE = 64
CHECKPOINTS = ["sub/modelA.safetensors [aaaaaaaaaa]", "modelB.ckpt [bbbbbbbbbb]"]
VAES = ["anime.vae.pt", "kl-f8.safetensors"]


def colour(p, seed):
    key = repr((p.prompt, p.negative_prompt, p.steps, p.sampler_name, p.cfg_scale, seed,
                sorted(p.override_settings.items())))
    return tuple(hashlib.md5(key.encode()).digest()[:3])


class FakeRunner:
    """Records each job; image k of a job is a solid colour from (fields, seed + k)."""

    def __init__(self, interrupt_at=None, fail_at=()):
        self.jobs = []
        self.interrupt_at = interrupt_at
        self.fail_at = fail_at

    def __call__(self, p):
        self.jobs.append(p)
        if len(self.jobs) in self.fail_at:
            raise RuntimeError("boom")
        seeds = [p.seed + k for k in range(p.batch_size * p.n_iter)]
        extra = "".join(f", {k}: {v}" for k, v in p.extra_generation_params.items())
        infos = [f"{p.prompt}\nSteps: {p.steps}, Sampler: {p.sampler_name}, Seed: {s}{extra}" for s in seeds]
        return Processed(images=[Image.new("RGB", (p.width, p.height), colour(p, s)) for s in seeds],
                         infotexts=infos, all_prompts=[p.prompt] * len(seeds),
                         all_negative_prompts=[p.negative_prompt] * len(seeds), all_seeds=seeds,
                         all_subseeds=[p.subseed] * len(seeds), width=p.width, height=p.height,
                         interrupted=len(self.jobs) == self.interrupt_at, saved=[f"img{len(self.jobs)}.png"] * len(seeds))


def make_p(runner, **fields):
    request = Txt2ImgRequest(**{"prompt": "a cat", "steps": 20, "sampler_name": "Euler", "seed": 1234,
                                "subseed": 55, "width": SIZE, "height": SIZE, **fields})
    p = Processing(request, is_img2img=False, runner=runner)
    p.saved_grids = []
    p.save_grid = lambda image, info, basename: p.saved_grids.append((image, info, basename)) or f"{basename}.png"
    return p


def axis_index(script, label, is_img2img=False):
    return [a.label for a in script.axes(is_img2img)].index(label)


def run(script, p, x=("Nothing", ""), y=("Nothing", ""), z=("Nothing", ""), **options):
    args = []
    for kind, text in (x, y, z):
        args += [axis_index(script, kind, p.is_img2img), text, []]
    opts = dict(draw_legend=False, include_lone_images=False, include_sub_grids=False, no_fixed_seeds=False,
                vary_seeds_x=False, vary_seeds_y=False, vary_seeds_z=False, margin_size=0, csv_mode=True)
    opts.update(options)
    return script.run(p, *args, *opts.values())


@pytest.fixture
def script():
    return XYZPlot(lambda: CHECKPOINTS, lambda: VAES)


def cell_colour(grid, ix, iy, x0=0, y0=0):
    return grid.getpixel((x0 + ix * SIZE + SIZE // 2, y0 + iy * SIZE + SIZE // 2))


# ---- values -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1-5", [1, 2, 3, 4, 5]),
    ("1-10 (+2)", [1, 3, 5, 7, 9]),
    ("10-1 (-3)", [10, 7, 4]),  # A1111 stops before end + 1 whichever the direction
    ("1-10 [5]", [1, 3, 5, 7, 10]),
    ("3, 1-2, 7", [3, 1, 2, 7]),
    ("-1", [-1]),
])
def test_int_ranges_expand_as_a1111(script, text, expected):
    steps = script.axes(False)[axis_index(script, "Seed")]
    assert parse_axis_values(steps, text) == expected


@pytest.mark.parametrize("text, expected", [
    ("0.5-1.5 [3]", [0.5, 1.0, 1.5]),
    ("1-2 (+0.5)", [1.0, 1.5, 2.0]),
    ("5-7", [5.0, 6.0, 7.0]),
    ("7.5, 2", [7.5, 2.0]),
])
def test_float_ranges_expand_as_a1111(script, text, expected):
    cfg = script.axes(False)[axis_index(script, "CFG Scale")]
    assert parse_axis_values(cfg, text) == pytest.approx(expected)


def test_range_pieces_are_strings_until_typed():
    assert expand_ranges(["a", "2-3"], int) == ["a", 2, 3]


def test_csv_values_keep_quoted_commas_and_strip_spaces():
    assert split_csv('cat,  "red, blue" , dog') == ["cat", "red, blue", "dog"]


def test_bad_values_name_the_axis(script):
    steps = script.axes(False)[axis_index(script, "Steps")]
    with pytest.raises(ValueError, match="'abc'.*Steps"):
        parse_axis_values(steps, "10, abc")
    with pytest.raises(ValueError, match="no values"):
        parse_axis_values(steps, "")


def test_choice_axes_check_values_and_list_the_allowed_ones(script):
    sampler = script.axes(False)[axis_index(script, "Sampler")]
    assert parse_axis_values(sampler, "euler a, k_euler") == ["Euler a", "Euler"]
    with pytest.raises(ValueError, match=r"Sampler has no value 'Nope'.*DPM\+\+ 2M"):
        parse_axis_values(sampler, "Euler, Nope")
    rng_source = script.axes(False)[axis_index(script, "RNG source")]
    with pytest.raises(ValueError, match="allowed: GPU, CPU, NV"):
        parse_axis_values(rng_source, "TPU")


def test_choice_axes_read_the_dropdown_unless_csv_mode(script):
    sampler = script.axes(False)[axis_index(script, "Sampler")]
    assert parse_axis_values(sampler, "DDIM", ["Euler"], csv_mode=False) == ["Euler"]
    assert parse_axis_values(sampler, "DDIM", ["Euler"], csv_mode=True) == ["DDIM"]


def test_checkpoint_matching_is_a1111s_closest_match():
    assert closest_checkpoint(CHECKPOINTS, "modelB") == "modelB.ckpt [bbbbbbbbbb]"
    assert closest_checkpoint(CHECKPOINTS, "modelA.safetensors [0123456789]") == CHECKPOINTS[0]
    assert closest_checkpoint(CHECKPOINTS, "modelC") is None


def test_axes_per_tab_in_a1111_order(script):
    txt = [a.label for a in script.axes(False)]
    img = [a.label for a in script.axes(True)]
    assert txt[:5] == ["Nothing", "Seed", "Var. seed", "Var. strength", "Steps"]
    assert "Hires steps" in txt and "Hires steps" not in img
    assert "Initial noise multiplier" in img and "Initial noise multiplier" not in txt
    assert txt.index("Sampler") < txt.index("Checkpoint name") < txt.index("Sigma Churn") < txt.index("Size")
    assert txt.count("Sampler") == 1 and img.count("Sampler") == 1


def test_ui_has_a1111s_run_arguments_in_order(script):
    controls = script.ui(False)
    assert len(controls) == 18
    assert [c.label for c in controls[:3]] == ["X type", "X values", "X values"]
    assert controls[0].value == "Seed" and controls[3].value == "Nothing"
    assert [c.value for c in controls[9:]] == [True, False, False, False, False, False, False, 0, False]
    assert controls[16].maximum == 500
    assert script.title() == "X/Y/Z plot" and script.show(False) and script.show(True)


# ---- running ------------------------------------------------------------------------------------------

def test_cells_go_to_their_place_in_the_grid(script):
    runner = FakeRunner()
    p = make_p(runner)
    result = run(script, p, x=("Steps", "10, 20, 30"), y=("Sampler", "Euler, DDIM"))
    grid = result.images[0]
    assert grid.size == (3 * SIZE, 2 * SIZE)
    assert len(runner.jobs) == 6
    for ix, steps in enumerate((10, 20, 30)):
        for iy, sampler in enumerate(("Euler", "DDIM")):
            probe = make_p(None, steps=steps, sampler_name=sampler)
            assert cell_colour(grid, ix, iy) == colour(probe, 1234)
    assert result.images == [grid] and len(result.infotexts) == 1
    assert [j.steps for j in runner.jobs] == [10, 20, 30, 10, 20, 30]  # X innermost, Y outer
    assert all(j.do_not_save_grid for j in runner.jobs)


def test_legend_and_margins_grow_the_grid(script):
    plain = run(script, make_p(FakeRunner()), x=("Steps", "10, 20"), y=("CFG Scale", "5, 7")).images[0]
    legend = run(script, make_p(FakeRunner()), x=("Steps", "10, 20"), y=("CFG Scale", "5, 7"),
                 draw_legend=True).images[0]
    spaced = run(script, make_p(FakeRunner()), x=("Steps", "10, 20"), y=("CFG Scale", "5, 7"),
                 draw_legend=True, margin_size=10).images[0]
    assert legend.width == plain.width + SIZE * 3 // 4 and legend.height > plain.height
    assert spaced.size == (legend.width + 10, legend.height + 10)
    pad_top = legend.height - plain.height
    assert cell_colour(legend, 1, 1, SIZE * 3 // 4, pad_top) == cell_colour(plain, 1, 1)


def test_legend_labels_are_a1111s(script, monkeypatch):
    import modules.service.scripts.xyz_plot as xyz
    seen = []
    real = xyz.draw_grid_annotations
    monkeypatch.setattr(xyz, "draw_grid_annotations",
                        lambda grid, w, h, hor, ver, margin=0: seen.append(([a.text for t in hor for a in t],
                                                                             [a.text for t in ver for a in t]))
                        or real(grid, w, h, hor, ver, margin))
    run(script, make_p(FakeRunner()), x=("Steps", "10, 20"), y=("Sampler", "Euler, DDIM"),
        z=("Checkpoint name", "sub/modelA.safetensors [aaaaaaaaaa]"), draw_legend=True)
    assert seen[0] == (["Steps: 10", "Steps: 20"], ["Euler", "DDIM"])
    assert seen[1] == (["modelA.safetensors [aaaaaaaaaa]"], [""])
    seen.clear()
    run(script, make_p(FakeRunner()), x=("CFG Scale", "0.1-0.3 [3]"), y=("Prompt S/R", "cat, dog"), draw_legend=True)
    assert seen[0] == (["CFG Scale: 0.1", "CFG Scale: 0.2", "CFG Scale: 0.3"], ["cat", "dog"])


def test_grid_infotext_is_the_first_cells_with_the_plot_keys(script):
    runner = FakeRunner()
    result = run(script, make_p(runner), x=("Steps", "10-30 (+10)"), y=("Sampler", "Euler, DDIM"))
    info = result.infotexts[0]
    assert info.startswith("a cat\nSteps: 10, Sampler: Euler")
    assert ("Script: X/Y/Z plot, X Type: Steps, X Values: 10-30 (+10), Y Type: Sampler, Y Values: Euler, DDIM"
            in info)
    assert "Z Type" not in info and "Fixed" not in info
    assert [bool(j.extra_generation_params) for j in runner.jobs] == [True] + [False] * 5
    assert runner.jobs[0].extra_generation_params["X Type"] == "Steps"


def test_seeds_are_fixed_once_for_all_cells(script):
    runner = FakeRunner()
    p = make_p(runner, seed=-1, subseed=-1)
    run(script, p, x=("Steps", "10, 20"))
    seeds = {j.seed for j in runner.jobs}
    assert len(seeds) == 1 and seeds != {-1} and p.seed in seeds and p.subseed != -1

    runner = FakeRunner()
    run(script, make_p(runner, seed=-1), x=("Steps", "10, 20"), no_fixed_seeds=True)
    assert [j.seed for j in runner.jobs] == [-1, -1]


def test_seed_axis_fixes_minus_one_and_records_the_fixed_values(script):
    runner = FakeRunner()
    result = run(script, make_p(runner), x=("Seed", "-1, 5"))
    random_seed = runner.jobs[0].seed
    assert random_seed != -1 and runner.jobs[1].seed == 5
    assert f"X Values: -1, 5, Fixed X Values: {random_seed}, 5" in result.infotexts[0]

    runner = FakeRunner()
    result = run(script, make_p(runner), x=("Seed", "-1, 5"), no_fixed_seeds=True)
    assert runner.jobs[0].seed == -1 and "Fixed X Values" not in result.infotexts[0]


def test_vary_seeds_offsets_each_cell(script):
    runner = FakeRunner()
    run(script, make_p(runner), x=("Steps", "10, 20, 30"), y=("CFG Scale", "5, 7"), vary_seeds_x=True,
        vary_seeds_y=True)
    assert sorted((j.steps, j.cfg_scale, j.seed) for j in runner.jobs) == sorted(
        (s, c, 1234 + ix + iy * 3) for ix, s in enumerate((10, 20, 30)) for iy, c in enumerate((5, 7)))


def test_z_axis_makes_grids_side_by_side_and_optional_sub_grids(script):
    runner = FakeRunner()
    p = make_p(runner)
    result = run(script, p, x=("Steps", "10, 20"), y=("Sampler", "Euler, DDIM"), z=("CFG Scale", "5, 9"),
                 include_sub_grids=True, include_lone_images=True)
    main, sub1, sub2 = result.images[:3]
    assert main.size == (4 * SIZE, 2 * SIZE) and sub1.size == sub2.size == (2 * SIZE, 2 * SIZE)
    assert cell_colour(main, 2, 1) == colour(make_p(None, steps=10, sampler_name="DDIM", cfg_scale=9.0), 1234)
    assert cell_colour(sub2, 0, 1) == cell_colour(main, 2, 1)
    assert len(result.images) == 3 + 8 and len(result.infotexts) == len(result.images)
    assert result.index_of_first_image == 3
    assert "Z Type: CFG Scale, Z Values: 5, 9" in result.infotexts[0]
    assert "Z Type" not in result.infotexts[2] and "Script: X/Y/Z plot" in result.infotexts[2]
    assert [basename for _, _, basename in p.saved_grids] == ["xyz_grid"] * 3
    assert p.saved_grids[0][1] == result.infotexts[0]
    assert result.saved[:3] == ["xyz_grid.png"] * 3 and len(result.saved) == len(result.images)
    assert result.all_seeds == [1234] * 8 and len(result.all_prompts) == 8


def test_without_sub_grids_only_the_main_grid_is_kept_and_saved(script):
    p = make_p(FakeRunner())
    result = run(script, p, x=("Steps", "10, 20"), z=("CFG Scale", "5, 9"))
    assert len(result.images) == 1 and result.images[0].size == (4 * SIZE, SIZE)
    assert len(p.saved_grids) == 1


def test_batches_put_each_cells_first_image_in_the_grid(script):
    runner = FakeRunner()
    result = run(script, make_p(runner, batch_size=2), x=("Steps", "10, 20"), include_lone_images=True)
    assert all(j.batch_size == 2 for j in runner.jobs)
    assert cell_colour(result.images[0], 1, 0) == colour(make_p(None, steps=20), 1234)
    assert len(result.images) == 3


def test_setting_axes_set_override_settings(script):
    runner = FakeRunner()
    run(script, make_p(runner), x=("Clip skip", "1, 2"), y=("Checkpoint name", "modelB"),
        z=("Always discard next-to-last sigma", "True"))
    assert runner.jobs[0].override_settings == {"CLIP_stop_at_last_layers": 1, "sd_model_checkpoint": CHECKPOINTS[1],
                                                "always_discard_next_to_last_sigma": True}
    runner = FakeRunner()
    run(script, make_p(runner), x=("Sigma Churn", "0.5"), y=("Schedule rho", "3"), z=("VAE", "none"))
    assert runner.jobs[0].override_settings == {"s_churn": 0.5, "rho": 3.0, "sd_vae": "None"}
    runner = FakeRunner()
    run(script, make_p(runner), x=("RNG source", "CPU"), y=("Schedule type", "karras"), z=("Eta", "0.3"))
    job = runner.jobs[0]
    assert job.override_settings == {"randn_source": "CPU"} and job.scheduler == "Karras" and job.eta == 0.3


def test_expensive_axes_are_looped_outermost(script):
    runner = FakeRunner()
    run(script, make_p(runner), x=("Checkpoint name", "modelA, modelB"), y=("Steps", "10, 20, 30"))
    order = [j.override_settings["sd_model_checkpoint"] for j in runner.jobs]
    assert order == [CHECKPOINTS[0]] * 3 + [CHECKPOINTS[1]] * 3


def test_prompt_sr_and_prompt_order(script):
    runner = FakeRunner()
    run(script, make_p(runner, prompt="a cat on a mat", negative_prompt="ugly cat"), x=("Prompt S/R", "cat, dog"))
    assert [(j.prompt, j.negative_prompt) for j in runner.jobs] == [("a cat on a mat", "ugly cat"),
                                                                     ("a dog on a mat", "ugly dog")]
    runner = FakeRunner()
    with pytest.raises(ValueError, match="did not find 'horse'"):
        run(script, make_p(runner), x=("Prompt S/R", "horse, dog"))
    assert runner.jobs == []

    runner = FakeRunner()
    run(script, make_p(runner, prompt="red, cat, big"), x=("Prompt order", "cat, red"))
    assert [j.prompt for j in runner.jobs] == ["cat, red, big", "red, cat, big"]


def test_size_axis_and_bad_values_fail_before_generating(script):
    runner = FakeRunner()
    result = run(script, make_p(runner), x=("Size", "64x128, 128x64"))
    assert [(j.width, j.height) for j in runner.jobs] == [(64, 128), (128, 64)]
    assert result.images[0].size == (256, 128)
    for axis, text in (("Size", "64 by 64"), ("Steps", "0, 10"), ("Sampler", "Foo"), ("Schedule type", "Bogus")):
        runner = FakeRunner()
        with pytest.raises(ValueError, match=axis):
            run(script, make_p(runner), x=(axis, text))
        assert runner.jobs == []


def test_hires_axes_exist_on_txt2img_only(script):
    runner = FakeRunner()
    run(script, make_p(runner, enable_hr=True), x=("Hires steps", "5"), y=("Hires sampler", "DDIM"),
        z=("Hires upscaler", "Latent (nearest)"))
    job = runner.jobs[0]
    assert (job.hr_second_pass_steps, job.hr_sampler_name, job.hr_upscaler) == (5, "DDIM", "Latent (nearest)")


def test_interrupt_stops_and_returns_the_grid_so_far(script):
    runner = FakeRunner(interrupt_at=2)
    result = run(script, make_p(runner), x=("Steps", "10, 20, 30"), include_lone_images=True)
    assert len(runner.jobs) == 2 and result.interrupted
    grid = result.images[0]
    assert cell_colour(grid, 1, 0) == colour(make_p(None, steps=20), 1234)
    assert cell_colour(grid, 2, 0) == (0, 0, 0)  # never generated: blank
    assert len(result.images) == 4 and result.infotexts[3] == ""


def test_a_failing_cell_is_blank_but_all_failing_raises(script):
    result = run(script, make_p(FakeRunner(fail_at=(1,))), x=("Steps", "10, 20"))
    assert cell_colour(result.images[0], 0, 0) == (0, 0, 0)
    assert cell_colour(result.images[0], 1, 0) == colour(make_p(None, steps=20), 1234)
    with pytest.raises(RuntimeError, match="boom"):
        run(script, make_p(FakeRunner(fail_at=(1, 2))), x=("Steps", "10, 20"))


def test_axis_type_may_be_given_by_label_and_bad_types_are_named(script):
    runner = FakeRunner()
    script.run(make_p(runner), "Steps", "10, 20", [], "Nothing", "", [], "Nothing", "", [])
    assert [j.steps for j in runner.jobs] == [10, 20]
    with pytest.raises(ValueError, match="unknown X type 'Bogus'"):
        script.run(make_p(FakeRunner()), "Bogus", "1")
    with pytest.raises(ValueError, match="out of range"):
        script.run(make_p(FakeRunner()), 999, "1")
