"""A1111's processing hooks on always-on extension scripts: every hook, in A1111's order, with the
per-batch fields, and the rewrites published extensions make — per-image prompts and seeds
(dynamic prompts), more batches, a changed ``p.prompt``, in-place and replaced batch pictures."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from modules.core.infotext import parse_infotext
from tests.test_extensions import request, start, with_extensions


def started_with(extension: str, data_dir, tiny_checkpoint):
    """Hanga started on ``data_dir`` with one test extension and the tiny checkpoint."""
    with_extensions(data_dir, extension)
    (data_dir / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, data_dir / "models" / "Stable-diffusion" / tiny_checkpoint.name)
    return start(data_dir)[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_checkpoint):
    return started_with("hook-order", tmp_path_factory.mktemp("hooks"), tiny_checkpoint)


def run(service, mode, **fields):
    script = next(s for s in service.scripts.always_on(False) if s.title() == "Hook order")
    script.calls.clear()
    outcome = service.txt2img(request(**fields), alwayson={"Hook order": [mode]})
    return outcome.processed, list(script.calls)


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_every_hook_runs_in_a1111_order_with_the_batch_fields(service):
    processed, calls = run(service, "record", batch_size=2, n_iter=2, seed=40)
    batch = ["before_process_batch:{n}:{seeds}:{seeds}", "after_extra_networks_activate:{n}",
             "process_batch:{n}:['a kite', 'a kite']", "process_before_every_sampling:{n}:(2, 4, 8, 8):noise:True",
             "postprocess_batch:{n}:(2, 3, 64, 64)",
             "postprocess_batch_list:{n}:2", "postprocess_image:(64, 64)", "postprocess_image:(64, 64)"]
    expected = ["setup", "before_process", "process:4:40:model",
                *[entry.format(n=0, seeds=[40, 41]) for entry in batch],
                *[entry.format(n=1, seeds=[42, 43]) for entry in batch],
                f"postprocess:{len(processed.images)}"]
    assert calls == expected
    assert processed.all_seeds == [40, 41, 42, 43]


def test_before_hr_runs_per_batch_before_its_hires_pass(service):
    _, calls = run(service, "record", n_iter=2, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent")
    kept = ("process_batch", "process_before_every_sampling", "before_hr", "postprocess_batch")
    assert [call for call in calls if call.split(":")[0] in kept] == [
        "process_batch:0:['a kite']", "process_before_every_sampling:0:(1, 4, 8, 8):noise:True", "before_hr:0",
        "process_before_every_sampling:0:(1, 4, 12, 12):latent:True", "postprocess_batch:0:(1, 3, 96, 96)",
        "process_batch:1:['a kite']", "process_before_every_sampling:1:(1, 4, 8, 8):noise:True", "before_hr:1",
        "process_before_every_sampling:1:(1, 4, 12, 12):latent:True", "postprocess_batch:1:(1, 3, 96, 96)"]


def test_process_may_rewrite_each_images_prompt_and_seed_like_dynamic_prompts(service):
    processed, calls = run(service, "dynamic", batch_size=2, seed=-1)
    assert calls[2].startswith("process:2:")
    assert processed.all_prompts == ["a kite, variant 0", "a kite, variant 1"]
    assert processed.all_seeds == [1000, 1007] and processed.all_subseeds == [50, 51]
    assert "process_batch:0:['a kite, variant 0', 'a kite, variant 1']" in calls
    images = [image for image in processed.images if image.size == (64, 64)][-2:]
    for index, infotext in enumerate(processed.infotexts[-2:]):
        params = parse_infotext(infotext)
        assert params["Prompt"] == f"a kite, variant {index}" and params["Negative prompt"] == f"ugly {index}"
        assert params["Seed"] == str(1000 + 7 * index)
    # The second picture is the one its own prompt and seed give in a plain job.
    plain, _ = run(service, "off", prompt="a kite, variant 1", negative_prompt="ugly 1", seed=1007)
    assert np.abs(pixels(images[1]) - pixels(plain.images[0])).max() <= 2
    assert np.abs(pixels(images[0]) - pixels(plain.images[0])).max() > 10


def test_more_prompts_than_images_with_a_larger_batch_count(service):
    processed, calls = run(service, "more", seed=5)
    assert processed.all_prompts == ["a kite, take 0", "a kite, take 1"] and processed.all_seeds == [5, 6]
    assert [parse_infotext(text)["Prompt"] for text in processed.infotexts[-2:]] == processed.all_prompts
    assert sum(call.startswith("process_batch:") for call in calls) == 2


def test_a_script_that_changes_p_prompt_instead_of_the_lists_still_gets_it(service):
    processed, _ = run(service, "prompt", seed=9)
    assert processed.all_prompts == ["changed by the script"] and processed.all_seeds == [9]
    assert parse_infotext(processed.infotexts[0])["Prompt"] == "changed by the script"


def test_postprocess_batch_edits_in_place_and_batch_list_may_reorder(service):
    plain, _ = run(service, "off", batch_size=2, seed=12)
    darker, _ = run(service, "darken", batch_size=2, seed=12)
    singles = lambda processed: [image for image in processed.images if image.size == (64, 64)][-2:]  # noqa: E731
    for before, after in zip(singles(plain), singles(darker)):
        assert np.abs(pixels(before) // 2 - pixels(after)).max() <= 1
    swapped, _ = run(service, "swap", batch_size=2, seed=12)
    assert [pixels(image).tolist() for image in singles(swapped)] == [pixels(image).tolist() for image in singles(plain)[::-1]]
    assert swapped.infotexts[-2:] == plain.infotexts[-2:]  # the pictures moved, their seeds' metadata did not
    dropped, calls = run(service, "drop", batch_size=2, seed=12)  # Hanga keeps one picture per seed
    assert [pixels(image).tolist() for image in singles(dropped)] == [pixels(image).tolist() for image in singles(plain)]


def test_p_scripts_and_script_args_in_a1111s_layout(service):
    _, calls = run(service, "layout")
    assert "layout:['layout']:True:0:False" in calls


def test_a_script_may_build_its_own_img2img_p_and_process_it_like_adetailer(service, tmp_path):
    from modules.core.generation.request import Img2ImgRequest

    plain, _ = run(service, "off", seed=30)
    fixed, calls = run(service, "nested", seed=30)
    assert "nested:(64, 64):130:1" in calls
    again = service.img2img(Img2ImgRequest(prompt="a paper boat", init_images=(plain.images[0],), denoising_strength=0.5,
                                           seed=130, sampler_name="Euler", steps=3, cfg_scale=6, width=64, height=64),
                            save_images=False).processed
    assert np.abs(pixels(fixed.images[0]) - pixels(again.images[0])).max() <= 2  # the nested job's picture replaced it
    assert np.abs(pixels(fixed.images[0]) - pixels(plain.images[0])).max() > 10
    assert fixed.infotexts == plain.infotexts  # the outer job's metadata


@pytest.mark.parametrize("outer, nested", [
    ("a kite <lora:detail:1>", "a paper boat <lora:detail:1>"),  # the same LoRA again: merged once, not twice
    ("a kite <lora:detail:0.5>", "a paper boat"),  # the outer job's LoRA stays out of the nested job
])
def test_a_nested_job_has_its_own_loras_only(service, outer, nested):
    from safetensors.torch import save_file

    from modules.core.generation.request import Img2ImgRequest
    from tests.fixtures.tiny_sd import build_tiny_sd1
    from tests.test_lora import kohya_lora

    folder = service.paths.data / "models" / "Lora"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "detail.safetensors").exists():
        save_file(kohya_lora(build_tiny_sd1(seed=0), scale=0.5), str(folder / "detail.safetensors"))
    plain, _ = run(service, "off", seed=31, prompt=outer)
    weights = {key: value.clone() for key, value in service.models.loaded.model.unet.state_dict().items()}
    fixed, calls = run(service, "nested", seed=31, prompt=outer)
    assert "nested:(64, 64):131:1" in calls
    again = service.img2img(Img2ImgRequest(prompt=nested, init_images=(plain.images[0],), denoising_strength=0.5,
                                           seed=131, sampler_name="Euler", steps=3, cfg_scale=6, width=64, height=64),
                            save_images=False).processed
    assert np.abs(pixels(fixed.images[0]) - pixels(again.images[0])).max() <= 2
    after = service.models.loaded.model.unet.state_dict()
    assert all(torch.equal(weights[key], after[key]) for key in weights)  # every LoRA out again
    assert service.models.loaded.model.lora_mergers == []


def test_built_p_refuses_positional_and_unknown_fields(service):
    from modules import processing
    from modules.service.extensions import context

    context.bind(service=service)
    with pytest.raises(TypeError, match="keyword arguments only"):
        processing.StableDiffusionProcessingTxt2Img("a kite")
    with pytest.raises(TypeError, match="build a StableDiffusionProcessingTxt2Img"):
        processing.StableDiffusionProcessing(prompt="a kite")
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a kite", steps=2, width=64, height=64, seed=4,
                                                    sampler_index=0, comments={})  # unknown names: attributes
    assert isinstance(p, processing.StableDiffusionProcessingTxt2Img) and p.request.steps == 2 and p.comments == {}
    assert processing.process_images(p).all_seeds == [4]


def test_lists_a_script_left_too_short_are_the_requests_error(service):
    with pytest.raises(ValueError, match="all_prompts.*1 entries for 2 images"):
        run(service, "short", batch_size=2)


def test_process_before_every_sampling_starts_img2img_from_the_init_latent(service):
    from PIL import Image

    from modules.core.generation.request import Img2ImgRequest

    script = next(s for s in service.scripts.always_on(True) if s.title() == "Hook order")
    script.calls.clear()
    picture = Image.new("RGB", (64, 64), (200, 40, 40))
    service.img2img(Img2ImgRequest(prompt="a kite", steps=2, width=64, height=64, seed=3, init_images=(picture,),
                                   denoising_strength=0.5), alwayson={"Hook order": ["record"]})
    assert "process_before_every_sampling:0:(1, 4, 8, 8):latent:True" in script.calls


# -- CFG denoiser callbacks (on_cfg_denoiser, on_cfg_denoised, on_cfg_after_cfg) --------------------

@pytest.fixture(scope="module")
def cfg_service(tmp_path_factory, tiny_checkpoint):
    service = started_with("cfg-callbacks", tmp_path_factory.mktemp("cfg"), tiny_checkpoint)
    watcher = service.callbacks.by_event["cfg_denoiser"][0].callback.__self__
    return service, watcher


def cfg_run(cfg_service, mode, **fields):
    service, watcher = cfg_service
    watcher.mode, watcher.seen = mode, []
    try:
        return service.txt2img(request(**fields), save_images=False).processed, list(watcher.seen)
    finally:
        watcher.mode = "off"


def test_cfg_callbacks_see_every_prediction_with_a1111s_step_count(cfg_service):
    _, seen = cfg_run(cfg_service, "record", batch_size=2, steps=3, sampler_name="Euler")
    service, _ = cfg_service
    assert service.callbacks.by_event["cfg_denoiser"][0].name == "cfg watcher"
    denoiser = [entry for entry in seen if entry[0] == "denoiser"]
    # Euler: one prediction per step; the batch is both images' cond rows, then their uncond rows.
    assert [entry[1:3] for entry in denoiser] == [(0, 3), (0, 3), (1, 3)]  # A1111: the last finished step
    for entry in denoiser:
        assert entry[3] == (4, 4, 8, 8) and entry[4] == (4,) and entry[5] is None and entry[8] is True
        assert entry[6][0] == 2 and entry[7][0] == 2  # text_cond, text_uncond: one row per image
    assert [entry[0] for entry in seen] == ["denoiser", "denoised", "after_cfg"] * 3
    assert all(entry[2] == (4, 4, 8, 8) and entry[3] is True for entry in seen if entry[0] == "denoised")
    assert all(entry[2] == (2, 4, 8, 8) for entry in seen if entry[0] == "after_cfg")


def test_cfg_callbacks_changes_are_what_runs(cfg_service):
    # Guidance made a no-op from either end gives the picture of a CFG scale of 1.
    fields = {"seed": 21, "steps": 3, "cfg_scale": 9.0, "negative_prompt": "mud"}
    plain, _ = cfg_run(cfg_service, "off", **fields)
    unguided, _ = cfg_run(cfg_service, "off", **{**fields, "cfg_scale": 1.0})
    assert np.abs(pixels(plain.images[0]) - pixels(unguided.images[0])).max() > 10  # the scale matters here
    for mode in ("same-text", "cond-only"):
        changed, _ = cfg_run(cfg_service, mode, **fields)
        assert np.abs(pixels(changed.images[0]) - pixels(unguided.images[0])).max() <= 2, mode
        assert changed.infotexts[0] == plain.infotexts[0]


def test_a_failing_cfg_callback_is_reported_and_the_picture_still_made(cfg_service):
    service, _ = cfg_service
    errors = len(service.callbacks.errors)
    plain, _ = cfg_run(cfg_service, "off", seed=8)
    failing, _ = cfg_run(cfg_service, "fail", seed=8)
    assert len(service.callbacks.errors) > errors
    assert service.callbacks.errors[-1][1] == "cfg_denoiser" and "this callback is broken" in service.callbacks.errors[-1][2]
    assert pixels(failing.images[0]).tolist() == pixels(plain.images[0]).tolist()


def test_cfg_callbacks_hear_the_hires_pass_too(cfg_service):
    _, seen = cfg_run(cfg_service, "record", steps=3, sampler_name="Euler", enable_hr=True, hr_scale=1.5,
                      hr_upscaler="Latent", hr_second_pass_steps=2)
    denoiser = [entry for entry in seen if entry[0] == "denoiser"]
    assert [entry[1:4] for entry in denoiser] == [(0, 3, (2, 4, 8, 8)), (0, 3, (2, 4, 8, 8)), (1, 3, (2, 4, 8, 8)),
                                                  (0, 2, (2, 4, 12, 12)), (0, 2, (2, 4, 12, 12))]


def test_the_script_runner_copies_and_filters_like_adetailer_does(service):
    import copy

    script = next(s for s in service.scripts.always_on(False) if s.title() == "Hook order")
    script.calls.clear()
    seen = {}
    original = script.process

    def process(p, mode):  # what ADetailer's script_filter does with p.scripts
        runner = copy.copy(p.scripts)
        runner.alwayson_scripts = [s for s in runner.alwayson_scripts if s.filename and s.filename.endswith("hook_order.py")]
        seen["kept"] = [s.title() for s in runner.alwayson_scripts]
        seen["outer"] = [s.title() for s in p.scripts.alwayson_scripts]
        return original(p, mode)

    script.process = process
    try:
        service.txt2img(request(), alwayson={"Hook order": ["off"]})
    finally:
        del script.process
    assert seen == {"kept": ["Hook order"], "outer": ["Hook order"]}
