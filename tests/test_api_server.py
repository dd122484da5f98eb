"""/sdapi/v1 against the real server (``webui.py --api``) on a free loopback port, over plain HTTP,
with bodies shaped like those published A1111 clients send."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import threading
import time

import httpx
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules.core.infotext import parse_infotext
from tests.fixtures.live_server import Server

STYLES = "\ufeffname,prompt,negative_prompt\ncinematic,\"{prompt}, film grain\",lowres\n# hidden,x,y\nplain,sunny,\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    data = tmp_path_factory.mktemp("api-server") / "data"
    checkpoints = data / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, checkpoints / tiny_checkpoint.name)
    (data / "styles.csv").write_text(STYLES, encoding="utf-8")
    (data / "models" / "Lora").mkdir(parents=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, str(data / "models" / "Lora" / "lora1.safetensors"),
              metadata={"ss_output_name": "my-alias"})
    (data / "models" / "hypernetworks").mkdir(parents=True)
    (data / "models" / "hypernetworks" / "hn1.pt").write_bytes(b"")
    (data / "embeddings").mkdir()
    save_file({"emb_params": torch.zeros(2, 7)}, str(data / "embeddings" / "odd-width.safetensors"))
    save_file({"emb_params": torch.randn(3, 64)}, str(data / "embeddings" / "three-vectors.safetensors"))
    (data / "models" / "VAE").mkdir(parents=True)
    (data / "models" / "VAE" / "my-vae.safetensors").write_bytes(b"")
    extension = data / "extensions" / "sd-webui-example"
    (extension / ".git" / "refs" / "heads").mkdir(parents=True)
    (extension / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (extension / ".git" / "refs" / "heads" / "main").write_text("0123456789abcdef0123456789abcdef01234567\n")
    (extension / ".git" / "config").write_text('[remote "origin"]\n\turl = https://example.invalid/ext.git\n')
    live = Server(data, "--api", "--api-log", "--use-cpu", "all", "--cors-allow-origins", "http://client.example")
    live.data = data
    yield live
    live.stop()


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url + "/sdapi/v1", timeout=180) as client:
        yield client


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def png_b64(image: Image.Image, parameters: str | None = None) -> str:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


def small(**fields) -> dict:
    return {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, **fields}


def in_background(api: httpx.Client, path: str, body: dict) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def call() -> None:
        box["response"] = api.post(path, json=body)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, box


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -------------------------------------------------------------------------------------- generation

def test_minimal_txt2img_uses_the_api_defaults(api):
    response = api.post("/txt2img", json={"prompt": "a red cube", "steps": 1})
    assert response.status_code == 200, response.text
    data = response.json()
    info = json.loads(data["info"])
    image = decode(data["images"][0])
    assert image.size == (512, 512) and image.info["parameters"] == info["infotexts"][0]
    assert info["sampler_name"] == "Euler" and info["steps"] == 1 and info["cfg_scale"] == 7.0


def test_full_txt2img_with_hires_and_override_settings(api):
    title = api.get("/sd-models").json()[0]["title"]
    body = {
        "prompt": "castle on a hill", "negative_prompt": "blurry", "styles": [], "seed": 1234, "subseed": -1,
        "subseed_strength": 0, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "batch_size": 2, "n_iter": 1,
        "steps": 3, "cfg_scale": 6.5, "width": 64, "height": 64, "restore_faces": False, "tiling": False,
        "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 2, "denoising_strength": 0.5,
        "hr_checkpoint_name": None, "hr_sampler_name": None, "hr_scheduler": None, "hr_prompt": "", "script_name": None,
        "override_settings": {"sd_model_checkpoint": title, "CLIP_stop_at_last_layers": 2},
        "override_settings_restore_afterwards": True, "send_images": True, "save_images": False, "alwayson_scripts": {},
    }
    response = api.post("/txt2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    info = json.loads(data["info"])
    assert info["all_seeds"] == [1234, 1235] and info["clip_skip"] == 2 and info["denoising_strength"] == 0.5
    assert [decode(b64).size for b64 in data["images"]] == [(128, 128), (128, 128)]
    params = parse_infotext(info["infotexts"][1])
    assert params["Seed"] == "1235" and params["Clip skip"] == "2" and params["Hires upscale"] == "2"
    assert params["Hires steps"] == "2" and params["Schedule type"] == "Karras" and params["Size-1"] == "64"
    assert api.get("/options").json()["CLIP_stop_at_last_layers"] == 1  # restored afterwards


def test_img2img_with_mask_keeps_the_unmasked_half(api):
    red = Image.new("RGB", (64, 64), (200, 30, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    body = small(init_images=[png_b64(red)], mask="data:image/png;base64," + png_b64(mask), denoising_strength=0.9,
                 inpainting_fill=1, inpaint_full_res=False, mask_blur=0, seed=5, include_init_images=False)
    response = api.post("/img2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    result = torch.tensor(list(decode(data["images"][0]).convert("RGB").getdata()), dtype=torch.float32).view(64, 64, 3)
    original = torch.tensor([200.0, 30.0, 30.0])
    assert (result[:, 40:] - original).abs().max() <= 1  # untouched outside the mask
    assert (result[:, :24] - original).abs().mean() > 10  # repainted inside
    assert data["parameters"]["init_images"] is None and "Mask blur: 0" not in json.loads(data["info"])["infotexts"][0]


def test_png_info_reads_a_hanga_png(api):
    made = api.post("/txt2img", json=small(seed=42)).json()
    response = api.post("/png-info", json={"image": "data:image/png;base64," + made["images"][0]})
    assert response.status_code == 200
    info = response.json()
    assert info["info"] == json.loads(made["info"])["infotexts"][0]
    assert info["parameters"]["Seed"] == 42 or info["parameters"]["Seed"] == "42"
    assert info["parameters"]["Prompt"] == "a lighthouse"


def test_styles_and_infotext_fields(api):
    styled = json.loads(api.post("/txt2img", json=small(prompt="a cat", styles=["cinematic", "unknown"])).json()["info"])
    assert styled["prompt"] == "a cat, film grain" and styled["negative_prompt"] == "lowres"
    text = "a dog\nNegative prompt: cat\nSteps: 3, Sampler: Euler a, CFG scale: 5, Seed: 77, Size: 64x64, Clip skip: 2"
    pasted = json.loads(api.post("/txt2img", json={"infotext": text, "steps": 2}).json()["info"])
    assert pasted["steps"] == 2 and pasted["seed"] == 77 and pasted["sampler_name"] == "Euler a"
    assert pasted["prompt"] == "a dog" and pasted["negative_prompt"] == "cat" and pasted["clip_skip"] == 2
    assert pasted["width"] == 64 and pasted["cfg_scale"] == 5


# ------------------------------------------------------------------------------ progress and queue

def test_progress_while_running_then_interrupt(api, server):
    thread, box = in_background(api, "/txt2img", small(steps=30, width=128, height=128, seed=9, force_task_id="long-1",
                                                       override_settings={"show_progress_every_n_steps": 1}))
    state = wait_for(lambda: (lambda p: p if p["state"]["sampling_step"] >= 3 else None)(api.get("/progress").json()),
                     what="the job to reach step 3")
    assert 0 < state["progress"] < 1 and state["eta_relative"] > 0 and state["current_task"] == "long-1"
    assert state["state"]["job"] == "txt2img" and state["state"]["sampling_steps"] == 30 and state["state"]["job_count"] == 1
    assert decode(state["current_image"]).size == (16, 16) and "step" in state["textinfo"]
    assert api.get("/progress", params={"skip_current_image": "true"}).json()["current_image"] is None
    assert api.post("/interrupt").json() == {}
    thread.join(120)
    assert box["response"].status_code == 200 and len(box["response"].json()["images"]) == 1
    idle = api.get("/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
    log = server.log.read_text()
    assert re.search(r"Job #\d+ long-1 txt2img: 128x128, 30 steps, Euler, 1 image\(s\) in [\d.]+ s \([\d.]+ it/s\), interrupted", log)


def test_skip_ends_the_current_batch_and_the_job_goes_on(api, server):
    thread, box = in_background(api, "/txt2img", small(steps=30, width=128, height=128, n_iter=2, seed=20,
                                                       force_task_id="skip-1"))
    wait_for(lambda: api.get("/progress").json()["state"]["sampling_step"] >= 3, what="the first batch to run")
    assert api.post("/skip/").json() == {}
    second = wait_for(lambda: (lambda p: p if p["state"]["job_no"] == 1 else None)(api.get("/progress").json()),
                      what="the second batch")
    assert second["state"]["skipped"] is False and second["state"]["job_count"] == 2
    thread.join(120)
    info = json.loads(box["response"].json()["info"])
    assert box["response"].status_code == 200 and info["all_seeds"] == [20, 21] and len(info["infotexts"]) == 2
    line = re.search(r"Job #\d+ skip-1 txt2img: .*", server.log.read_text()).group(0)
    assert "interrupted" not in line


def test_eight_clients_five_requests_each_in_order_of_arrival(api, server):
    results: dict[str, httpx.Response] = {}
    positions: list[str] = []
    done = threading.Event()

    def client(number: int) -> None:
        with httpx.Client(base_url=server.url + "/sdapi/v1", timeout=300) as own:
            for index in range(5):
                task = f"c{number}-{index}"
                results[task] = own.post("/txt2img", json=small(seed=1000 * number + index, force_task_id=task))

    def watch() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as own:
            while not done.is_set():
                queue = own.get("/sdapi/v1/queue").json()
                if len(queue) > 2:
                    shown = own.post("/internal/progress", json={"id_task": queue[-1]["id"]}).json()
                    if shown["queued"]:
                        positions.append(shown["textinfo"])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(600)
    done.set()
    watcher.join(30)
    assert len(results) == 40
    for task, response in results.items():
        assert response.status_code == 200, (task, response.text)
        number, index = map(int, task[1:].split("-"))
        info = json.loads(response.json()["info"])
        assert info["all_seeds"] == [1000 * number + index]
        assert f"Seed: {1000 * number + index}," in info["infotexts"][0]
        assert decode(response.json()["images"][0]).info["parameters"] == info["infotexts"][0]
    assert any(re.fullmatch(r"In queue: ([2-9]|\d\d+)/\d+", text) for text in positions), positions[:5]
    # the log line of each job carries its number of arrival: jobs finish in that order
    finished = [(int(n), task) for n, task in re.findall(r"Job #(\d+) (c\d-\d) txt2img", server.log.read_text())]
    assert sorted(task for _, task in finished) == sorted(results)
    numbers = [n for n, _ in finished]
    assert numbers == sorted(numbers)
    for client_number in range(8):
        own = [n for n, task in finished if task.startswith(f"c{client_number}-")]
        assert own == sorted(own)


def test_queue_cap_and_cancelling_a_waiting_job(api):
    assert api.post("/options", json={"queue_limit": 1}).status_code == 200
    try:
        running, running_box = in_background(api, "/txt2img", small(steps=30, width=128, height=128, force_task_id="cap-a"))
        wait_for(lambda: api.get("/progress").json()["current_task"] == "cap-a", what="cap-a to run")
        waiting, waiting_box = in_background(api, "/txt2img", small(force_task_id="cap-b"))
        wait_for(lambda: [job["id"] for job in api.get("/queue").json()] == ["cap-a", "cap-b"], what="cap-b to wait")
        full = api.post("/txt2img", json=small())
        assert full.status_code == 429 and full.json()["error"] == "QueueFull" and "queue_limit" in full.json()["detail"]
        assert api.delete("/queue/cap-a").status_code == 409  # running: that is what /interrupt is for
        assert api.delete("/queue/cap-b").json() == {"cancelled": "cap-b"}
        waiting.join(60)
        assert waiting_box["response"].status_code == 409 and waiting_box["response"].json()["error"] == "JobCancelled"
        assert api.delete("/queue/no-such-job").status_code == 404
        api.post("/interrupt")
        running.join(120)
        assert running_box["response"].status_code == 200
    finally:
        assert api.post("/options", json={"queue_limit": 100}).status_code == 200


# ---------------------------------------------------------------------------------------- options

def test_options_round_trip(api, server):
    options = api.get("/options").json()
    assert options["CLIP_stop_at_last_layers"] == 1 and options["sd_model_checkpoint"].startswith("tiny-sd1")
    options["CLIP_stop_at_last_layers"] = 2
    response = api.post("/options/", json=options)  # the whole object back, trailing slash and all
    assert response.status_code == 200 and response.json() is None
    assert api.get("/options").json()["CLIP_stop_at_last_layers"] == 2
    assert json.loads((server.data / "config.json").read_text())["CLIP_stop_at_last_layers"] == 2
    refused = api.post("/options", json={"CLIP_stop_at_last_layers": 99, "eta_ddim": 0.5})
    assert refused.status_code == 422 and "CLIP_stop_at_last_layers" in refused.json()["errors"]
    assert api.get("/options").json()["eta_ddim"] == options["eta_ddim"]  # nothing of a refused update is kept
    missing = api.post("/options", json={"sd_model_checkpoint": "nope.safetensors"})
    assert missing.status_code == 422 and "sd_model_checkpoint" in missing.json()["errors"]
    assert api.post("/options", json={"CLIP_stop_at_last_layers": 1}).status_code == 200


# -------------------------------------------------------------------------------------- lists

def test_lists_of_models_networks_samplers_and_scripts(api, server):
    samplers = api.get("/samplers").json()
    names = [s["name"] for s in samplers]
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM"} <= set(names)
    assert all(isinstance(s["aliases"], list) and isinstance(s["options"], dict) for s in samplers)
    schedulers = {s["name"]: s for s in api.get("/schedulers").json()}
    assert schedulers["karras"]["label"] == "Karras" and schedulers["karras"]["default_rho"] == 7.0
    assert [u["name"] for u in api.get("/upscalers").json()] == ["None", "Lanczos", "Nearest"]
    assert {"name": "Latent (nearest-exact)"} in api.get("/latent-upscale-modes").json()
    model = api.get("/sd-models").json()[0]
    assert model["model_name"] == "tiny-sd1" and re.fullmatch(r"[0-9a-f]{10}", model["hash"])
    vaes = api.get("/sd-vae").json()
    assert [v["model_name"] for v in vaes] == ["my-vae.safetensors"] and vaes[0]["filename"].endswith("my-vae.safetensors")
    assert [h["name"] for h in api.get("/hypernetworks").json()] == ["hn1"]
    lora = api.get("/loras").json()
    assert [(item["name"], item["alias"]) for item in lora] == [("lora1", "my-alias")]
    assert lora[0]["metadata"]["ss_output_name"] == "my-alias"
    assert api.post("/reload-checkpoint").status_code == 200  # embeddings are matched to the loaded model
    embeddings = api.get("/embeddings").json()
    assert embeddings["skipped"]["odd-width"]["shape"] == 7 and list(embeddings["loaded"]) == ["three-vectors"]
    loaded = embeddings["loaded"]["three-vectors"]
    assert (loaded["shape"], loaded["vectors"], loaded["sd_checkpoint_name"]) == (64, 3, "tiny-sd1")
    assert api.get("/prompt-styles").json() == [
        {"name": "cinematic", "prompt": "{prompt}, film grain", "negative_prompt": "lowres"},
        {"name": "plain", "prompt": "sunny", "negative_prompt": ""},
    ]
    assert api.get("/face-restorers").json() == [] and api.get("/realesrgan-models").json() == []
    scripts = api.get("/scripts").json()
    assert "x/y/z plot" in scripts["txt2img"] and "loopback" in scripts["img2img"] and "loopback" not in scripts["txt2img"]
    info = api.get("/script-info").json()
    assert any(s["name"] == "prompt matrix" and s["args"] and not s["is_alwayson"] for s in info)
    listed = api.get("/extensions").json()
    assert "tag-autocomplete" in [item["name"] for item in listed]  # built-ins are listed too, as in A1111
    extension = [item for item in listed if item["name"] == "sd-webui-example"]
    assert extension == [{"name": "sd-webui-example", "remote": "https://example.invalid/ext.git", "branch": "main",
                          "commit_hash": "0123456789abcdef0123456789abcdef01234567", "version": "01234567",
                          "commit_date": extension[0]["commit_date"], "enabled": True}]
    flags = api.get("/cmd-flags").json()
    assert flags["api"] is True and flags["api_log"] is True and flags["use_cpu"] == ["all"]
    memory = api.get("/memory").json()
    assert memory["ram"]["total"] > memory["ram"]["used"] > 0 and memory["cuda"] == {"error": "unavailable"}


def test_refresh_unload_and_reload(api, server):
    second = server.data / "models" / "Stable-diffusion" / "second.safetensors"
    shutil.copy(server.data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors", second)
    assert len(api.get("/sd-models").json()) == 1
    assert api.post("/refresh-checkpoints").status_code == 200
    assert sorted(m["model_name"] for m in api.get("/sd-models").json()) == ["second", "tiny-sd1"]
    for path in ("/refresh-vae", "/refresh-embeddings", "/refresh-loras"):
        assert api.post(path).status_code == 200
    assert api.post("/unload-checkpoint").json() == {}
    assert api.post("/reload-checkpoint").json() == {}
    assert api.post("/txt2img", json=small()).status_code == 200


def test_extras_upscale_keeps_the_parameters(api):
    source = Image.new("RGB", (40, 24), (10, 120, 200))
    body = {"image": png_b64(source, "a boat\nSteps: 2, Seed: 3"), "upscaling_resize": 2, "upscaler_1": "Lanczos",
            "resize_mode": 0, "show_extras_results": True, "gfpgan_visibility": 0, "codeformer_visibility": 0,
            "codeformer_weight": 0, "upscaling_crop": True, "upscaler_2": "None", "extras_upscaler_2_visibility": 0}
    response = api.post("/extra-single-image/", json=body)
    assert response.status_code == 200, response.text
    picture = decode(response.json()["image"])
    assert picture.size == (80, 48) and picture.info["parameters"] == "a boat\nSteps: 2, Seed: 3"
    assert "Postprocess upscale by: 2" in picture.info["postprocessing"]
    assert "Postprocess upscaler: Lanczos" in response.json()["html_info"]
    batch = api.post("/extra-batch-images", json={"imageList": [{"data": png_b64(source), "name": "a.png"}] * 2,
                                                   "resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 60,
                                                   "upscaler_1": "Nearest"})
    assert batch.status_code == 200 and [decode(b).size for b in batch.json()["images"]] == [(100, 60), (100, 60)]


def test_routes_docs_and_cors(api, server):
    assert api.get("/txt2img").status_code == 405
    missing = api.get("/system_stats")
    assert missing.status_code == 404 and missing.json()["error"] == "HTTPException"
    assert api.get("/samplers/").status_code == 200
    assert "/txt2img" in httpx.get(server.url + "/sdapi/v1/openapi.json").json()["paths"]
    assert "swagger" in httpx.get(server.url + "/docs", follow_redirects=True).text.lower()
    preflight = httpx.options(server.url + "/sdapi/v1/txt2img", headers={
        "Origin": "http://client.example", "Access-Control-Request-Method": "POST"})
    assert preflight.headers.get("access-control-allow-origin") == "http://client.example"
    assert "access-control-allow-origin" not in httpx.options(server.url + "/sdapi/v1/txt2img", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}).headers


def test_image_urls_are_refused_unless_allowed_and_never_private(api):
    body = small(init_images=["http://127.0.0.1:1/picture.png"])
    refused = api.post("/img2img", json=body)
    assert refused.status_code == 422 and "api_enable_requests" in refused.json()["errors"]
    api.post("/options", json={"api_enable_requests": True})
    try:
        for url in ("http://127.0.0.1:1/p.png", "http://localhost/p.png", "http://10.1.2.3/p.png", "http://[::1]/p.png",
                    "http://169.254.169.254/latest/meta-data"):
            private = api.post("/img2img", json=small(init_images=[url]))
            assert private.status_code == 422 and "private" in private.json()["errors"], url
    finally:
        api.post("/options", json={"api_enable_requests": False})


# ------------------------------------------------------------------------------ malformed requests

BAD_IMAGE = "bm90IGFuIGltYWdl"  # base64 of "not an image"
MALFORMED = [
    ("/txt2img", {"steps": "many"}, "steps"),
    ("/txt2img", {"steps": 0}, "steps"),
    ("/txt2img", {"steps": 100000}, "steps"),
    ("/txt2img", {"width": 10}, "width"),
    ("/txt2img", {"width": 100000}, "width"),
    ("/txt2img", {"height": "tall"}, "height"),
    ("/txt2img", {"batch_size": 0}, "batch_size"),
    ("/txt2img", {"batch_size": 1000}, "batch_size"),
    ("/txt2img", {"n_iter": -1}, "n_iter"),
    ("/txt2img", {"cfg_scale": "high"}, "cfg_scale"),
    ("/txt2img", {"seed": "lucky"}, "seed"),
    ("/txt2img", {"prompt": ["a", "list"]}, "prompt"),
    ("/txt2img", {"sampler_name": "Warp Drive"}, "sampler_name"),
    ("/txt2img", {"scheduler": "sometimes"}, "scheduler"),
    ("/txt2img", {"override_settings": {"sd_model_checkpoint": "missing.safetensors"}}, "sd_model_checkpoint"),
    ("/txt2img", {"override_settings": {"CLIP_stop_at_last_layers": 50}}, "CLIP_stop_at_last_layers"),
    ("/txt2img", {"enable_hr": True, "hr_upscaler": "Bogus"}, "hr_upscaler"),
    ("/txt2img", {"enable_hr": True, "hr_checkpoint_name": "missing"}, "hr_checkpoint_name"),
    ("/txt2img", {"refiner_checkpoint": "missing"}, "refiner_checkpoint"),
    ("/txt2img", {"script_name": "no such script"}, "script_name"),
    ("/txt2img", {"alwayson_scripts": {"ADetailer": {"args": []}}}, "alwayson_scripts"),
    ("/txt2img", b"", "body"),
    ("/txt2img", b"{\"prompt\": ", "body"),
    ("/txt2img", [], "body"),
    ("/img2img", {"init_images": ["%%% not base64 %%%"]}, "init_images"),
    ("/img2img", {"init_images": [BAD_IMAGE]}, "init_images"),
    ("/img2img", {}, "init_images"),
    ("/img2img", {"init_images": [None]}, "init_images"),
    ("/img2img", {"mask": BAD_IMAGE, "init_images": ["INIT"]}, "mask"),
    ("/img2img", {"denoising_strength": 2, "init_images": ["INIT"]}, "denoising_strength"),
    ("/img2img", {"resize_mode": 7, "init_images": ["INIT"]}, "resize_mode"),
    ("/png-info", {"image": BAD_IMAGE}, "image"),
    ("/png-info", {}, "image"),
    ("/extra-single-image", {"image": "INIT", "upscaler_1": "ESRGAN_4x"}, "upscaler_1"),
    ("/extra-single-image", {"image": BAD_IMAGE}, "image"),
    ("/extra-single-image", {"image": "INIT", "gfpgan_visibility": 0.5}, "gfpgan_visibility"),
    ("/options", {"sd_model_checkpoint": "missing"}, "sd_model_checkpoint"),
    ("/options", {"eta_ddim": "x"}, "eta_ddim"),
]


@pytest.mark.parametrize("path,body,field", MALFORMED, ids=[f"{p}-{f}-{i}" for i, (p, _, f) in enumerate(MALFORMED)])
def test_malformed_request_is_a_4xx_json_error_naming_the_field(api, path, body, field):
    init = png_b64(Image.new("RGB", (64, 64)))
    if isinstance(body, bytes):
        response = api.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        if isinstance(body, dict):
            body = {**small(), **body} if path in ("/txt2img", "/img2img") else body
            body = json.loads(json.dumps(body).replace('"INIT"', json.dumps(init)))
        response = api.post(path, json=body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()
    assert set(error) == {"error", "detail", "body", "errors"}
    assert field in error["errors"], error


def test_still_serving_after_the_malformed_requests(api):
    assert len(MALFORMED) >= 25
    assert api.post("/txt2img", json=small(seed=3)).status_code == 200


def test_full_vae_previews_and_the_request_log(api, server):
    thread, box = in_background(api, "/txt2img", small(steps=30, width=128, height=128, force_task_id="full-preview",
                                                       override_settings={"show_progress_every_n_steps": 2,
                                                                          "show_progress_type": "Full"}))
    shown = wait_for(lambda: api.get("/progress").json()["current_image"], what="a full preview")
    assert decode(shown).size == (128, 128)  # decoded by the VAE, not the latent-sized approximation
    thread.join(120)
    assert box["response"].status_code == 200
    assert api.post("/txt2img", json={"steps": -5}).status_code == 422
    log = server.log.read_text()
    assert re.search(r"API POST /sdapi/v1/txt2img → 200 in [\d.]+ s \(from 127\.0\.0\.1\)", log)
    assert re.search(r"API POST /sdapi/v1/txt2img → 422 in", log)  # refused requests are logged too


def test_api_alone_with_nowebui_and_server_stop(data_dir):
    live = Server(data_dir, "--nowebui", "--api-server-stop", "--skip-load-model-at-start")
    try:
        assert httpx.get(live.url + "/sdapi/v1/sd-models").json()[0]["model_name"] == "tiny-sd1"
        assert httpx.get(live.url + "/").status_code == 404  # no UI
        assert httpx.post(live.url + "/sdapi/v1/server-stop").json() == {}
        assert live.process.wait(timeout=30) == 0
    finally:
        if live.process.poll() is None:
            live.stop()
    assert "Model tiny-sd1" not in live.log.read_text()  # --skip-load-model-at-start: nothing was loaded


def test_kill_9_during_a_batch_leaves_whole_pictures_and_settings(data_dir):
    """Pictures and config.json are written to a temporary file and renamed: a server killed in the
    middle of saving leaves the old or the new file, never a truncated one."""
    import os
    import signal

    live = Server(data_dir, "--api")
    try:
        options = httpx.post(live.url + "/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2, "jpeg_quality": 91})
        assert options.status_code == 200
        body = small(n_iter=100, width=128, height=128, steps=1, save_images=True)
        def generate() -> None:
            try:
                httpx.post(live.url + "/sdapi/v1/txt2img", json=body, timeout=300)
            except httpx.HTTPError:
                pass  # the server is killed under it

        threading.Thread(target=generate, daemon=True).start()
        folder = data_dir / "outputs" / "txt2img-images"
        wait_for(lambda: len(list(folder.rglob("*.png"))) >= 5, what="pictures being saved")
        os.kill(live.process.pid, signal.SIGKILL)  # while it keeps saving
        live.process.wait(30)
    finally:
        if live.process.poll() is None:
            live.stop()
    pictures = list(folder.rglob("*.png"))
    assert 5 <= len(pictures) < 100
    for path in pictures:
        with Image.open(path) as picture:
            picture.load()  # a truncated PNG raises here
            assert picture.info["parameters"].startswith("a lighthouse")
    assert all(p.name.startswith(".") and p.suffix == ".tmp" for p in folder.rglob("*") if p.is_file() and p.suffix != ".png")
    settings = json.loads((data_dir / "config.json").read_text())
    assert settings["CLIP_stop_at_last_layers"] == 2 and settings["jpeg_quality"] == 91
