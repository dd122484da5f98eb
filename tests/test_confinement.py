"""Names that come from requests or settings cannot lead outside their folders."""

from __future__ import annotations

import pytest

from modules.core.generation.request import InvalidRequest, Txt2ImgRequest


def request(**fields) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{"prompt": "../../etc/passwd", "steps": 1, "width": 64, "height": 64, "seed": 5, **fields})


def test_file_name_patterns_stay_in_the_output_folder(service, tmp_path):
    outputs = service.paths.outputs
    outcome = service.txt2img(request(), save_images=True,
                              override_settings={"samples_filename_pattern": "../../x-[seed]-[prompt_spaces]"})
    saved = outcome.saved[-1]
    assert saved.resolve().is_relative_to(outputs.resolve()) and saved.name.startswith("00000-.._.._x-5-")
    for pattern in ("../../escape", "/tmp/elsewhere", "[date]/../../.."):
        with pytest.raises(InvalidRequest, match="directories_filename_pattern"):
            service.txt2img(request(), save_images=True, override_settings={"directories_filename_pattern": pattern})
    assert not (outputs.parent.parent / "escape").exists() and not (tmp_path / "elsewhere").exists()
    nested = service.txt2img(request(), save_images=True, override_settings={"directories_filename_pattern": "[date]/[seed]"})
    assert nested.saved[-1].parent.name == "5"  # subfolders inside are fine
