"""A1111's processing hooks on always-on extension scripts: every hook, in A1111's order, with the
per-batch fields, and the rewrites published extensions make — per-image prompts and seeds
(dynamic prompts), more batches, a changed ``p.prompt``, in-place and replaced batch pictures."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from modules.core.infotext import parse_infotext
from tests.test_extensions import request, start, with_extensions


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_checkpoint):
    data_dir = with_extensions(tmp_path_factory.mktemp("hooks"), "hook-order")
    (data_dir / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, data_dir / "models" / "Stable-diffusion" / tiny_checkpoint.name)
    _, service = start(data_dir)
    return service


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
             "process_batch:{n}:['a kite', 'a kite']", "postprocess_batch:{n}:(2, 3, 64, 64)",
             "postprocess_batch_list:{n}:2", "postprocess_image:(64, 64)", "postprocess_image:(64, 64)"]
    expected = ["setup", "before_process", "process:4:40:model",
                *[entry.format(n=0, seeds=[40, 41]) for entry in batch],
                *[entry.format(n=1, seeds=[42, 43]) for entry in batch],
                f"postprocess:{len(processed.images)}"]
    assert calls == expected
    assert processed.all_seeds == [40, 41, 42, 43]


def test_before_hr_runs_per_batch_before_its_hires_pass(service):
    _, calls = run(service, "record", n_iter=2, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent")
    assert [call for call in calls if call.split(":")[0] in ("process_batch", "before_hr", "postprocess_batch")] == [
        "process_batch:0:['a kite']", "before_hr:0", "postprocess_batch:0:(1, 3, 96, 96)",
        "process_batch:1:['a kite']", "before_hr:1", "postprocess_batch:1:(1, 3, 96, 96)"]


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


def test_lists_a_script_left_too_short_are_the_requests_error(service):
    with pytest.raises(ValueError, match="all_prompts.*1 entries for 2 images"):
        run(service, "short", batch_size=2)
