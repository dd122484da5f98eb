"""The img2img tab and the shared tab pieces without a browser: the app builds with every tab in
A1111's order, canvases become the right init image and mask, "Resize by" rounds as A1111's
latent does, sending a picture pastes its infotext, the Script dropdown maps values to scripts,
and the batch sub-tab runs the service once per file."""

from __future__ import annotations

import datetime

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.core.generation.request import InvalidRequest
from modules.core.infotext import parse_infotext
from modules.service.scripts import api
from modules.service.scripts.builtin import builtin_scripts
from modules.ui import img2img_tab, scripts_ui, txt2img_tab
from modules.service.batch import img2img_batch
from modules.ui.app import build_ui
from modules.ui.img2img_tab import (
    IMG2IMG, INPAINT, INPAINT_SKETCH, INPAINT_UPLOAD, SKETCH, editor_to_image_and_mask, img2img_request,
    init_image_and_mask, painted_mask, resize_by_size, resize_preview,
)


def picture(width=64, height=64, colour=(40, 90, 200)) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, colour[2])], -1)
    return Image.fromarray(rgb.astype(np.uint8)).convert("RGBA")


def layer(size=(64, 64), box=(10, 10, 30, 30), alpha=255) -> Image.Image:
    painted = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(painted).rectangle(box, fill=(255, 255, 255, alpha))
    return painted


def white(mask: Image.Image) -> set[tuple[int, int]]:
    ys, xs = np.nonzero(np.asarray(mask) == 255)
    return set(zip(xs.tolist(), ys.tolist()))


def box_pixels(box) -> set[tuple[int, int]]:
    x1, y1, x2, y2 = box
    return {(x, y) for x in range(x1, x2 + 1) for y in range(y1, y2 + 1)}


# ------------------------------------------------------------------------------ the app builds

def all_blocks(demo: gr.Blocks):
    return list(demo.blocks.values())


def test_app_has_img2img_between_txt2img_and_pnginfo_with_a1111_ids(service):
    service.scripts = builtin_scripts(service.models.titles, lambda: list(service.models.vaes()))
    demo = build_ui(service)
    top = next(b for b in all_blocks(demo) if isinstance(b, gr.Tabs) and b.elem_id == "tabs")
    assert [tab.label for tab in top.children] == ["txt2img", "img2img", "Extras", "PNG Info", "Gallery",
                                                   "Checkpoint Merger", "Settings"]
    ids = {b.elem_id for b in all_blocks(demo)}
    expected = {
        "img2img_prompt", "img2img_neg_prompt", "img2img_generate", "img2img_interrupt", "img2img_skip", "img2img_paste",
        "img2img_img2img_tab", "img2img_img2img_sketch_tab", "img2img_inpaint_tab", "img2img_inpaint_sketch_tab",
        "img2img_inpaint_upload_tab", "img2img_batch_tab", "img2img_image", "img2img_sketch", "img2maskimg",
        "inpaint_sketch", "img_inpaint_base", "img_inpaint_mask", "resize_mode", "img2img_width", "img2img_height",
        "img2img_scale", "img2img_denoising_strength", "img2img_mask_blur", "img2img_gallery", "html_info_img2img",
        "img2img_send_to_img2img", "img2img_send_to_inpaint", "script_list", "pnginfo_send_img2img",
        "pnginfo_send_inpaint", "txt2img_send_to_img2img", "txt2img_send_to_inpaint", "txt2img_upscale",
        "txt2img_hr", "txt2img_hr_upscaler", "txt2img_hires_steps", "txt2img_denoising_strength", "txt2img_hr_scale",
        "txt2img_hr_resize_x", "txt2img_hr_resize_y", "hr_sampler", "hr_scheduler", "hires_prompt", "hires_neg_prompt",
        "interrogate", "deepbooru", "extras_image", "extras_image_batch", "extras_batch_input_dir", "extras_upscaler_1",
        "extras_upscaler_2", "extras_upscaler_2_visibility", "extras_upscaling_resize", "extras_generate",
        "txt2img_send_to_extras", "img2img_send_to_extras", "pnginfo_send_extras",
    }
    assert expected <= ids
    by_id = {b.elem_id: b for b in all_blocks(demo) if b.elem_id}
    assert by_id["img2img_denoising_strength"].value == 0.75
    assert (by_id["img2img_mask_blur"].value, by_id["img2img_mask_blur"].maximum) == (4, 64)
    assert by_id["img2img_inpainting_fill"].value == "original"
    assert (by_id["img2img_scale"].minimum, by_id["img2img_scale"].maximum) == (0.05, 4.0)
    assert (by_id["img2img_inpaint_full_res_padding"].value, by_id["img2img_inpaint_full_res_padding"].maximum) == (32, 256)
    hires = {key: by_id[key].value for key in ("txt2img_hr_upscaler", "txt2img_hires_steps", "txt2img_denoising_strength",
                                               "txt2img_hr_scale", "txt2img_hr_resize_x", "txt2img_hr_resize_y")}
    assert hires == {"txt2img_hr_upscaler": "Latent", "txt2img_hires_steps": 0, "txt2img_denoising_strength": 0.7,
                     "txt2img_hr_scale": 2.0, "txt2img_hr_resize_x": 0, "txt2img_hr_resize_y": 0}
    # the optional hires rows follow their settings (both off by default)
    rows = {b.elem_id: b for b in all_blocks(demo) if isinstance(b, gr.Row) and b.elem_id}
    assert not rows["txt2img_hires_fix_row3"].visible and not rows["txt2img_hires_fix_row4"].visible
    # both tabs list the scripts for them: Loopback is img2img-only
    dropdowns = [b for b in all_blocks(demo) if isinstance(b, gr.Dropdown) and b.elem_id == "script_list"]
    choices = [[c[0] for c in d.choices] for d in dropdowns]
    assert choices[0][0] == choices[1][0] == "None"
    assert "Loopback" not in choices[0] and "Loopback" in choices[1] and "X/Y/Z plot" in choices[0]


def test_hires_rows_show_when_their_settings_are_on(service):
    service.settings.set("hires_fix_show_sampler", True)
    service.settings.set("hires_fix_show_prompts", True)
    rows = {b.elem_id: b for b in all_blocks(build_ui(service)) if isinstance(b, gr.Row) and b.elem_id}
    assert rows["txt2img_hires_fix_row3"].visible and rows["txt2img_hires_fix_row4"].visible


# ------------------------------------------------------------------------- canvases → request

def test_img2img_and_sketch_use_the_picture_and_the_composite_without_a_mask():
    source = picture()
    assert editor_to_image_and_mask(source, IMG2IMG) == (source, None)
    assert editor_to_image_and_mask(None, IMG2IMG) == (None, None)
    composite = picture(colour=(0, 0, 10))
    image, mask = editor_to_image_and_mask({"background": source, "layers": [layer()], "composite": composite}, SKETCH)
    assert image is composite and mask is None


def test_inpaint_mask_is_where_the_layers_are_painted():
    source = picture()
    value = {"background": source, "layers": [layer(box=(10, 10, 30, 30)), layer(box=(40, 40, 50, 60))],
             "composite": source}
    image, mask = editor_to_image_and_mask(value, INPAINT)
    assert image is source
    assert mask.mode == "L" and mask.size == source.size
    assert white(mask) == box_pixels((10, 10, 30, 30)) | box_pixels((40, 40, 50, 60))
    assert set(np.unique(np.asarray(mask)).tolist()) == {0, 255}


def test_inpaint_mask_rounds_alpha_at_128_as_a1111():
    faint, strong = painted_mask([layer(alpha=128)], (64, 64)), painted_mask([layer(alpha=129)], (64, 64))
    assert not white(faint) and white(strong) == box_pixels((10, 10, 30, 30))


def test_inpaint_mask_of_a_canvas_sized_layer_is_scaled_to_the_picture():
    mask = painted_mask([layer(size=(128, 128), box=(0, 0, 63, 63))], (64, 64))
    assert white(mask) == box_pixels((0, 0, 31, 31))


def test_inpaint_without_a_picture_gives_nothing():
    assert editor_to_image_and_mask({"background": None, "layers": [], "composite": None}, INPAINT) == (None, None)


def test_inpaint_sketch_masks_what_the_sketch_changed():
    background = picture()
    composite = background.copy()
    ImageDraw.Draw(composite).rectangle((20, 20, 35, 35), fill=(255, 0, 0, 255))
    value = {"background": background, "layers": [], "composite": composite}
    image, mask = editor_to_image_and_mask(value, INPAINT_SKETCH, mask_alpha=0, mask_blur=0)
    assert white(mask) == box_pixels((20, 20, 35, 35))
    assert np.array_equal(np.asarray(image), np.asarray(composite))  # no blur: the sketch inside, the picture outside

    image, mask = editor_to_image_and_mask(value, INPAINT_SKETCH, mask_alpha=50, mask_blur=4)
    assert set(np.unique(np.asarray(mask)).tolist()) == {0, 127}  # Mask transparency dims the mask
    far = np.asarray(image)[:8, :8]
    assert np.array_equal(far, np.asarray(background)[:8, :8])  # far from the sketch: the picture as it was
    inside = np.asarray(image)[27, 27].astype(int)
    assert 100 < inside[0] < 255 and not np.array_equal(inside, np.asarray(background)[27, 27])  # half the sketch


def test_inpaint_upload_passes_the_picture_and_mask_through():
    source, mask = picture(), Image.new("L", (64, 64), 255)
    assert init_image_and_mask(INPAINT_UPLOAD, None, None, None, None, source, mask) == (source, mask)
    assert init_image_and_mask(5, picture(), None, None, None, None, None) == (None, None)  # Batch reads its folder


@pytest.mark.parametrize("size, scale, expected", [
    ((512, 512), 1.0, (512, 512)),
    ((100, 75), 1.5, (144, 112)),  # int(150) → 144, int(112.5) → 112
    ((512, 768), 0.3, (152, 224)),  # int(153.6) → 152, int(230.4) → 224
    ((640, 480), 2.05, (1312, 976)),  # 480 · 2.05 is 983.999… in floats: int → 983, as in A1111
])
def test_resize_by_takes_a1111s_int_size_down_to_a_multiple_of_8(size, scale, expected):
    assert resize_by_size(size, scale) == expected


def test_resize_preview_names_both_sizes():
    assert resize_preview(None, 2) == "no image selected"
    text = resize_preview((100, 75), 1.5)
    assert "100x75" in text and "144x112" in text


def test_request_from_the_inpaint_canvas():
    source = picture(192, 160)
    chosen = {"prompt": "a cat", "steps": 3, "width": 64, "height": 64, "mask_blur": 6, "inpainting_fill": 0,
              "inpaint_full_res": 1, "inpaint_full_res_padding": 12, "inpainting_mask_invert": 1, "resize_mode": 2,
              "denoising_strength": 0.6}
    editor = {"background": source, "layers": [layer(size=(192, 160))], "composite": source}
    request = img2img_request(chosen, INPAINT, (None, None, editor, None, None), None, scale_by=0.5).validate()
    assert request.init_images == (source,) and request.mode == INPAINT
    assert white(request.mask) == box_pixels((10, 10, 30, 30))
    assert (request.width, request.height) == (96, 80)  # "Resize by" 0.5 of 192×160
    assert request.inpaint_full_res is True and request.inpainting_mask_invert == 1
    assert (request.mask_blur, request.inpainting_fill, request.resize_mode, request.denoising_strength) == (6, 0, 2, 0.6)


def test_request_without_a_picture_is_an_invalid_request():
    from modules.core.generation.request import InvalidRequest

    with pytest.raises(InvalidRequest, match="init_images"):
        img2img_request({"prompt": "x"}, IMG2IMG, (None,) * 5, None).validate()


# ------------------------------------------------------------------------------------- send to

@pytest.fixture
def img2img(service):
    with gr.Blocks():
        return img2img_tab.build(service)


def updated(update) -> object:
    return update.get("value") if isinstance(update, dict) else getattr(update, "value", update)


def test_send_to_inpaint_puts_the_picture_in_the_canvas_and_pastes_the_infotext(service, img2img):
    text = ("a fox\nNegative prompt: text\nSteps: 5, Sampler: Euler a, CFG scale: 6.5, Seed: 42, Size: 64x72, "
            "Denoising strength: 0.4, Mask blur: 8, Inpaint area: Only masked, Masked content: fill, Clip skip: 2")
    source = picture()
    outputs = img2img.send_outputs(INPAINT)
    updates = img2img.send_updates(INPAINT, source, service.paste(text), {IMG2IMG: (10, 10)}, 2.0)
    assert len(updates) == len(outputs)
    assert outputs[0] is img2img.inpaint and updates[0]["background"] is source and updates[0]["layers"] == []
    by_component = dict(zip(map(id, outputs), updates))
    fields = img2img.controls.fields
    values = {name: updated(by_component[id(component)]) for name, component in fields.items()
              if isinstance(by_component[id(component)], dict)}
    assert values["prompt"] == "a fox" and values["negative_prompt"] == "text"
    assert (values["steps"], values["cfg_scale"], values["seed"], values["width"], values["height"]) == (5, 6.5, 42, 64, 72)
    assert (values["denoising_strength"], values["mask_blur"]) == (0.4, 8)
    assert values["inpaint_full_res"] == "Only masked" and values["inpainting_fill"] == "fill"
    assert by_component[id(img2img.controls.overrides)]["value"] == ["Clip skip: 2"]
    assert updates[outputs.index(img2img.sub_tabs)].selected == "img2img_inpaint_tab"
    assert updates[outputs.index(img2img.mode)] == INPAINT
    assert updates[outputs.index(img2img.inpaint_controls)].visible is True
    assert updates[outputs.index(img2img.sizes)] == {IMG2IMG: (10, 10), INPAINT: (64, 64)}
    assert "128x128" in updates[outputs.index(img2img.preview)]


def test_send_to_img2img_uses_the_upload_and_hides_inpaint_controls(service, img2img):
    source = picture()
    outputs = img2img.send_outputs(IMG2IMG)
    updates = img2img.send_updates(IMG2IMG, source, service.paste("a cat\nSteps: 7, Seed: 3"), {}, 1.0)
    assert outputs[0] is img2img.init_img and updates[0] is source
    assert updates[outputs.index(img2img.sub_tabs)].selected == "img2img_img2img_tab"
    assert updates[outputs.index(img2img.inpaint_controls)].visible is False


def test_send_without_a_picture_is_a_user_error(service, img2img):
    with pytest.raises(gr.Error, match="No image"):
        img2img.send_updates(INPAINT, None, service.paste(""), {}, 1.0)


# ----------------------------------------------------------------------------------- scripts

class Extension(api.Script):
    def title(self):
        return "Ext"

    def ui(self, is_img2img):
        return [gr.Textbox(label="free text", render=False), api.Radio("Pick", value="b", choices=("a", "b"), type="index")]


def test_script_controls_render_and_map_values_to_the_chosen_script():
    registry = builtin_scripts(lambda: ["model.safetensors"], lambda: [])
    registry.scripts.append(Extension())
    with gr.Blocks():
        controls = scripts_ui.build(registry, is_img2img=True)
    assert controls.titles == registry.titles(True)
    assert len(controls.groups) == len(controls.titles) and not any(group.visible for group in controls.groups)
    inputs = controls.inputs()
    assert inputs[0] is controls.dropdown and len(inputs) == 1 + sum(map(len, controls.controls))
    values = [component.value for component in inputs[1:]]
    assert controls.script_arg(["Prompt matrix", *values]) == ("Prompt matrix", [False, False, "positive", "comma", 0])
    assert controls.script_arg(["None", *values]) is None
    ext = controls.controls[controls.titles.index("Ext")]
    assert isinstance(ext[0], gr.Textbox) and ext[0].is_rendered and ext[1].type == "index"
    # outpainting's note is an HTML block whose text is passed along, as A1111's gr.HTML
    outpainting = controls.controls[controls.titles.index("Outpainting mk2")]
    assert isinstance(outpainting[0], gr.HTML)
    direction = next(c for c in outpainting if isinstance(c, gr.CheckboxGroup))
    assert direction.value == ["left", "right", "up", "down"]


def test_unknown_control_specs_are_refused():
    with gr.Blocks(), pytest.raises(TypeError, match="control spec"):
        scripts_ui.component_for(object())


# ----------------------------------------------------------------------------- txt2img pieces

@pytest.mark.parametrize("args, expected", [
    ((True, 512, 512, 2.0, 0, 0), ("512x512", "1024x1024")),
    ((True, 512, 768, 1.5, 0, 0), ("512x768", "768x1152")),
    ((True, 512, 768, 2.0, 1024, 0), ("512x768", "1024x1536")),
    ((True, 512, 768, 2.0, 0, 1024), ("512x768", "682x1024")),
    ((True, 512, 768, 2.0, 1024, 1024), ("512x768", "1024x1024")),
])
def test_hires_resolution_note(args, expected):
    note = txt2img_tab.hires_resolution(*args)
    assert f"from <span class='resolution'>{expected[0]}</span> to <span class='resolution'>{expected[1]}</span>" == note


def test_hires_note_is_empty_while_off_and_same_choices_map_to_empty():
    assert txt2img_tab.hires_resolution(False, 512, 512, 2, 0, 0) == ""
    chosen = txt2img_tab.hires_request_values({"hr_sampler_name": "Use same sampler", "hr_scheduler": "Karras",
                                               "hr_checkpoint_name": "Use same checkpoint"})
    assert chosen == {"hr_sampler_name": "", "hr_scheduler": "Karras", "hr_checkpoint_name": ""}


def test_upscaled_item_replaces_the_chosen_gallery_item():
    class Outcome:
        class processed:
            images, saved, infotexts, all_seeds, index_of_first_image = [picture()], ["/out/new.png"], ["new"], [9], 0

    state = {"seeds": [1, 2, 3], "infotexts": ["a", "b", "c"]}
    items, html, new_state, index = txt2img_tab.replace_gallery_item([("/a.png", None), ("/b.png", None), ("/c.png", None)],
                                                                     1, state, Outcome)
    assert [item[0] for item in items] == ["/a.png", "/out/new.png", "/c.png"]
    assert new_state == {"seeds": [1, 9, 3], "infotexts": ["a", "new", "c"]} and index == 1 and "new" in html


# ------------------------------------------------------------------------------------- batch

def test_batch_runs_each_file_into_the_output_folder_with_one_seed(service, tmp_path):
    source, out, masks = tmp_path / "in", tmp_path / "out", tmp_path / "masks"
    (source / "sub").mkdir(parents=True)
    masks.mkdir()
    picture().convert("RGB").save(source / "first.png")
    picture(colour=(0, 0, 30)).convert("RGB").save(source / "sub" / "second.jpg")
    (source / "notes.txt").write_text("not a picture")
    Image.new("L", (64, 64), 255).save(masks / "any-name.png")  # a lone mask serves every picture
    request = img2img_request({"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": -1}, 5, (None,) * 5, None)
    outcomes = img2img_batch(service, request, str(source), str(out), str(masks), None, {})
    assert len(outcomes) == 2
    files = sorted(path.name for path in out.iterdir())
    assert files == ["00000-first.png", "00001-second.png"]
    seeds = {outcome.processed.all_seeds[0] for outcome in outcomes}
    assert len(seeds) == 1 and -1 not in seeds
    with Image.open(out / "00000-first.png") as saved:
        params = parse_infotext(saved.info["parameters"])
    assert params["Mask blur"] == "4" and params["Denoising strength"] == "0.75"
    # nothing went to the usual folder
    usual = service.paths.resolve_output("outputs/img2img-images") / datetime.date.today().isoformat()
    assert not usual.exists() or not any(usual.iterdir())


def test_batch_skips_pictures_without_their_mask_and_scales_by(service, tmp_path):
    source, masks = tmp_path / "in", tmp_path / "masks"
    source.mkdir()
    masks.mkdir()
    picture(72, 64).convert("RGB").save(source / "a.png")
    picture(72, 64).convert("RGB").save(source / "b.png")
    Image.new("L", (72, 64), 255).save(masks / "a.png")
    Image.new("L", (72, 64), 255).save(masks / "other.png")
    request = img2img_request({"prompt": "x", "steps": 2, "seed": 5}, 5, (None,) * 5, None)
    outcomes = img2img_batch(service, request, str(source), "", str(masks), 1.3, {})
    assert len(outcomes) == 1  # b.png has no mask of its name
    assert outcomes[0].processed.images[0].size == (88, 80)  # int(93.6) → 88, int(83.2) → 80


def test_batch_of_an_empty_or_missing_folder_is_a_user_error(service, tmp_path):
    request = img2img_request({"prompt": "x"}, 5, (None,) * 5, None)
    with pytest.raises(InvalidRequest, match="input_dir: no images"):
        img2img_batch(service, request, str(tmp_path), "", "", None, {})
    with pytest.raises(InvalidRequest, match="input_dir: .* does not exist"):
        img2img_batch(service, request, str(tmp_path / "missing"), "", "", None, {})


# ------------------------------------------------------------- every sub-tab generates end to end

@pytest.mark.parametrize("mode", [IMG2IMG, SKETCH, INPAINT, INPAINT_SKETCH, INPAINT_UPLOAD])
def test_every_sub_tab_generates_on_the_tiny_model(service, mode):
    source = picture().convert("RGB")
    sketched = source.copy()
    ImageDraw.Draw(sketched).rectangle((20, 20, 40, 40), fill=(255, 0, 0))
    editor = {"background": source, "layers": [layer(box=(20, 20, 40, 40))], "composite": sketched}
    upload_mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(upload_mask).rectangle((20, 20, 40, 40), fill=255)
    canvases = {IMG2IMG: (source, None, None, None, None), SKETCH: (None, editor, None, None, None),
                INPAINT: (None, None, editor, None, None), INPAINT_SKETCH: (None, None, None, editor, None),
                INPAINT_UPLOAD: (None, None, None, None, source)}
    chosen = {"prompt": "a cat", "steps": 3, "width": 64, "height": 64, "seed": 9, "sampler_name": "Euler",
              "mask_blur": 0, "denoising_strength": 0.8}
    request = img2img_request(chosen, mode, canvases[mode], upload_mask if mode == INPAINT_UPLOAD else None)
    result = service.img2img(request, save_images=False).result
    out = np.asarray(result.images[0].image).astype(int)
    params = parse_infotext(result.infotexts[0])
    assert params["Denoising strength"] == "0.8"
    if mode in (IMG2IMG, SKETCH):
        assert "Mask blur" not in result.infotexts[0] and "Masked content" not in result.infotexts[0]
        assert not np.array_equal(out[:10, :10], np.asarray(source)[:10, :10])  # the whole picture was redrawn
    else:
        outside = np.ones((64, 64), bool)
        outside[20:41, 20:41] = False
        assert np.array_equal(out[outside], np.asarray(source if mode != INPAINT_SKETCH else sketched).astype(int)[outside])
        assert not np.array_equal(out[~outside], np.asarray(source).astype(int)[~outside])


def test_batch_appends_png_info_from_the_pictures_or_an_info_folder(service, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    from modules.service.batch import PngInfoUse

    source, infos = tmp_path / "in", tmp_path / "infos"
    source.mkdir()
    infos.mkdir()
    chunk = PngInfo()
    chunk.add_text("parameters", "a blue dog\nNegative prompt: ugly\nSteps: 2, Sampler: DDIM, CFG scale: 4, Seed: 42, "
                                 "Size: 64x64")
    picture().convert("RGB").save(source / "a.png", pnginfo=chunk)
    other = PngInfo()
    other.add_text("parameters", "a green bird\nSteps: 3, Sampler: Euler, CFG scale: 5, Seed: 7, Size: 64x64")
    picture().convert("RGB").save(infos / "a.png", pnginfo=other)
    request = img2img_request({"prompt": "oil painting", "negative_prompt": "blurry", "steps": 4, "width": 64,
                               "height": 64, "seed": 1}, 5, (None,) * 5, None)

    (own,) = img2img_batch(service, request, str(source), png_info=PngInfoUse())
    params = parse_infotext(own.result.infotexts[0])
    assert (params["Prompt"], params["Negative prompt"]) == ("oil painting a blue dog", "blurry ugly")
    assert (params["Steps"], params["Sampler"], params["CFG scale"], params["Seed"]) == ("2", "DDIM", "4", "42")

    (chosen,) = img2img_batch(service, request, str(source), png_info=PngInfoUse(("Seed",), str(infos)))
    params = parse_infotext(chosen.result.infotexts[0])
    assert (params["Prompt"], params["Seed"], params["Steps"]) == ("oil painting", "7", "4")


def test_watch_progress_reports_the_running_job_from_the_event_thread():
    """The batch sub-tab waits for several queued jobs; the bar is fed from the calling thread."""
    import threading
    import time
    from types import SimpleNamespace

    from modules.service.progress import ProgressSnapshot
    from modules.ui.common import watch_progress

    snapshot = ProgressSnapshot(active=True, job="img2img", job_no=0, job_count=1, sampling_step=3, sampling_steps=6,
                                started_at=time.time())
    service = SimpleNamespace(state=SimpleNamespace(snapshot=lambda: snapshot))
    calls = []
    caller = threading.current_thread()

    def progress(value, desc=""):
        calls.append((value, desc, threading.current_thread()))

    def work():
        time.sleep(0.3)
        return "done"

    assert watch_progress(service, progress, work, poll=0.05) == "done"
    assert calls and all(thread is caller for _, _, thread in calls)
    assert calls[0][0] == 0.5 and calls[0][1].startswith("Batch 1/1, step 3/6")
