"""The CLIP interrogator on tiny random BLIP and CLIP models saved in the Hugging Face layout."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, CLIPConfig,
    CLIPImageProcessorPil, CLIPModel,
)

from modules.core.interrogate.clip_interrogator import (
    BLIP_PROMPT, DEFAULT_LISTS, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Categories, ClipInterrogator,
    ImagePreprocess, InterrogateOptions, load_blip, load_clip, locate_model,
)
from tests.fixtures.clip import clip_tokenizer

IMAGE_SIZE = 32
WORDS = ("a picture of dog cat house tree sky red blue green man woman car road river mountain "
         "painting photo street window table chair flower bird water light dark small big on in with").split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


def _randomise(model: torch.nn.Module, seed: int, scale: float) -> None:
    """Every weight random, so that the tiny models tell phrases and images apart."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * scale)


def _build_blip(folder: Path) -> BlipForConditionalGeneration:
    folder.mkdir(parents=True)
    vocab_file = folder.parent / "blip-vocab.txt"
    vocab_file.write_text("\n".join(SPECIALS + WORDS) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(vocab_file), bos_token="[DEC]")
    assert len(tokenizer) == len(SPECIALS) + len(WORDS)
    config = BlipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32,
                         bos_token_id=5, pad_token_id=0, sep_token_id=3, eos_token_id=3),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=IMAGE_SIZE, patch_size=8),
        projection_dim=32,
    )
    model = BlipForConditionalGeneration(config).eval()
    _randomise(model, seed=1, scale=0.2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return model


def _build_clip(folder: Path) -> CLIPModel:
    folder.mkdir(parents=True)
    tokenizer = clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=IMAGE_SIZE, patch_size=8),
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    _randomise(model, seed=2, scale=0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                          crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "models"
    blip = _build_blip(root / "BLIP" / "tiny")
    clip = _build_clip(root / "CLIP" / "tiny")
    return root, blip, clip


@pytest.fixture(scope="module")
def interrogator(models_dir):
    root, _, _ = models_dir
    return ClipInterrogator(load_blip(root / "BLIP" / "tiny"), load_clip(root / "CLIP" / "tiny"))


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))


# Short captions wherever the caption's length is not what a test is about: the tests stay fast.
SHORT = InterrogateOptions(interrogate_clip_min_length=5, interrogate_clip_max_length=8)


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    """Short copies of the default lists (the first lines of each), so the independent one-phrase-
    at-a-time CLIP reference below stays quick."""
    folder = tmp_path_factory.mktemp("lists")
    for path in DEFAULT_LISTS.glob("*.txt"):
        (folder / path.name).write_text("\n".join(path.read_text().splitlines()[:10]) + "\n")
    return folder


@pytest.fixture(scope="module")
def similarities(models_dir, image, lists):
    """cos(image, phrase) of every phrase of ``lists``, computed independently, by category name."""
    _, _, clip = models_dir
    return {c.name: _similarities(clip, image, c.phrases) for c in Categories.load(defaults_folder=lists).items}


@torch.no_grad()
def _similarities(clip: CLIPModel, image: Image.Image, phrases) -> torch.Tensor:
    """cos(image, phrase) for each phrase, one phrase at a time, from the in-memory model."""
    pixels = np.asarray(image, dtype=np.float32) / 255.0  # the image is already CLIP's size
    pixels = (pixels - np.asarray(OPENAI_CLIP_MEAN, dtype=np.float32)) / np.asarray(OPENAI_CLIP_STD, dtype=np.float32)
    pixels = torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]
    image_embedding = clip.get_image_features(pixel_values=pixels).pooler_output[0]
    image_embedding = image_embedding / image_embedding.norm()
    tokenizer = clip_tokenizer()
    sims = []
    for phrase in phrases:
        ids = tokenizer(phrase, return_tensors="pt")["input_ids"]
        text = clip.get_text_features(input_ids=ids).pooler_output[0]
        sims.append(float(image_embedding @ (text / text.norm())))
    return torch.tensor(sims)


def _best(clip, image, phrases, count=1, sims=None) -> list[str]:
    sims = _similarities(clip, image, phrases) if sims is None else sims[:len(phrases)]
    order = sims.argsort(descending=True).tolist()
    assert sims[order[0]] - sims[order[1]] > 1e-4, "near tie: the test would not be decisive"
    return [phrases[i] for i in order[:count]]


def test_saved_models_are_safetensors(models_dir):
    root, _, _ = models_dir
    for kind in ("BLIP", "CLIP"):
        names = {p.name for p in (root / kind / "tiny").iterdir()}
        assert "model.safetensors" in names and not any(n.endswith(".bin") for n in names)


@pytest.mark.parametrize("min_length,max_length,beams", [(24, 48, 1), (5, 9, 2)])
def test_caption_is_bounded_and_drops_the_prompt(models_dir, interrogator, image, min_length, max_length, beams):
    _, blip, _ = models_dir
    options = InterrogateOptions(interrogate_clip_min_length=min_length, interrogate_clip_max_length=max_length,
                                 interrogate_clip_num_beams=beams)
    caption = interrogator.caption(image, options)

    tokenizer = interrogator.blip.tokenizer
    prompt = tokenizer(BLIP_PROMPT, return_tensors="pt")["input_ids"]
    pixels = torch.from_numpy(((np.asarray(image, dtype=np.float32) / 255 - OPENAI_CLIP_MEAN) / OPENAI_CLIP_STD)
                              .astype(np.float32).transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        ids = blip.generate(pixel_values=pixels, input_ids=prompt, num_beams=beams, min_length=min_length,
                            max_length=max_length, do_sample=False)[0]
    assert min_length <= len(ids) <= max_length
    assert ids[0] == blip.config.text_config.bos_token_id and ids[1:4].tolist() == prompt[0, 1:4].tolist()
    assert isinstance(caption, str) and caption
    assert caption == tokenizer.decode(ids[4:], skip_special_tokens=True).strip()
    assert len(tokenizer(caption, add_special_tokens=False)["input_ids"]) <= max_length - 4


def test_min_length_above_max_stops_at_max(interrogator, image):
    options = InterrogateOptions(interrogate_clip_min_length=30, interrogate_clip_max_length=8)
    words = interrogator.blip.tokenizer(interrogator.caption(image, options), add_special_tokens=False)["input_ids"]
    assert 0 < len(words) <= 8 - 4


def test_interrogation_is_caption_then_best_phrase_per_category(models_dir, interrogator, image, lists, similarities):
    _, _, clip = models_dir
    categories = Categories.load(defaults_folder=lists)
    assert categories.names() == ["artists", "flavors", "mediums", "movements"]
    result = interrogator.interrogate(image, categories)  # A1111's default settings
    caption = interrogator.caption(image)
    assert 24 - 4 <= len(interrogator.blip.tokenizer(caption, add_special_tokens=False)["input_ids"]) <= 48 - 4
    expected = [caption] + [_best(clip, image, c.phrases, sims=similarities[c.name])[0] for c in categories.items]
    assert result == ", ".join(expected)


def test_return_ranks_writes_softmax_scores(interrogator, image, lists, similarities):
    categories = Categories.load(defaults_folder=lists)
    result = interrogator.interrogate(image, categories, dataclasses.replace(SHORT, interrogate_return_ranks=True))
    caption = interrogator.caption(image, SHORT)
    assert result.startswith(caption + ", (")
    ranks = re.findall(r"\(([^()]+):(\d\.\d{3})\)", result[len(caption):])
    assert len(ranks) == len(categories.items)
    for (phrase, score), category in zip(ranks, categories.items):
        probabilities = (100 * similarities[category.name]).softmax(dim=0)
        best = int(probabilities.argmax())
        assert phrase == category.phrases[best]
        assert abs(float(score) - float(probabilities[best])) <= 0.0015


def test_topn_file_gives_n_phrases_best_first(models_dir, interrogator, image, tmp_path, lists, similarities):
    _, _, clip = models_dir
    (tmp_path / "flavors.top3.txt").write_text((lists / "flavors.txt").read_text())
    categories = Categories.load(tmp_path, defaults_folder=lists)
    flavors = next(c for c in categories.items if c.name == "flavors")
    assert flavors.topn == 3 and flavors.stem == "flavors.top3"
    ranked = interrogator.rank(interrogator.image_features(image), flavors)
    assert [phrase for phrase, _ in ranked] == _best(clip, image, flavors.phrases, 3, similarities["flavors"])
    assert ranked[0][1] >= ranked[1][1] >= ranked[2][1]
    only = dataclasses.replace(SHORT, interrogate_clip_skip_categories=["artists", "mediums", "movements"])
    result = interrogator.interrogate(image, categories, only)
    assert result == ", ".join([interrogator.caption(image, SHORT)] + [phrase for phrase, _ in ranked])


def test_skip_categories_by_name_or_file_stem(interrogator, image, tmp_path, lists):
    (tmp_path / "flavors.top2.txt").write_text("soft light\nhard light\nneon glow\n")
    categories = Categories.load(tmp_path, defaults_folder=lists)
    caption = interrogator.caption(image, SHORT)
    everything_but_movements = interrogator.interrogate(
        image, categories, dataclasses.replace(SHORT, interrogate_clip_skip_categories=["movements"]))
    assert len(everything_but_movements[len(caption):].split(", ")) - 1 == 1 + 2 + 1
    none = dataclasses.replace(SHORT, interrogate_clip_skip_categories=["artists", "flavors.top2", "mediums", "movements"])
    assert interrogator.interrogate(image, categories, none) == caption
    assert [c.name for c in categories.without(["flavors.top2", "mediums"])] == ["artists", "movements"]


def test_dict_limit_keeps_the_first_lines(models_dir, interrogator, image, lists, similarities):
    _, _, clip = models_dir
    mediums = next(c for c in Categories.load(defaults_folder=lists).items if c.name == "mediums")
    features = interrogator.image_features(image)
    for limit in (2, 5):
        (phrase, _), = interrogator.rank(features, mediums, dict_limit=limit)
        assert phrase == _best(clip, image, mediums.phrases[:limit], sims=similarities["mediums"])[0]
    (phrase, _), = interrogator.rank(features, mediums, dict_limit=0)
    assert phrase == _best(clip, image, mediums.phrases, sims=similarities["mediums"])[0]


def test_text_features_are_cached_per_content(models_dir):
    root, _, _ = models_dir

    class Counting(ClipInterrogator):
        encoded = 0

        def _encode_phrases(self, phrases):
            self.encoded += len(phrases)
            return super()._encode_phrases(phrases)

    counting = Counting(load_blip(root / "BLIP" / "tiny"), load_clip(root / "CLIP" / "tiny"))
    features = torch.nn.functional.normalize(torch.ones(16), dim=0)
    mediums = next(c for c in Categories.load().items if c.name == "mediums")
    counting.rank(features, mediums)
    counting.rank(features, mediums)
    assert counting.encoded == len(mediums.phrases)
    counting.rank(features, mediums, dict_limit=3)  # other content: encoded again
    assert counting.encoded == len(mediums.phrases) + 3


def test_batched_text_features_match_one_by_one(models_dir, interrogator):
    _, _, clip = models_dir
    phrases = ("a", "an oil painting of a house by the river at night, highly detailed " * 12, "cubism")
    batched = interrogator._encode_phrases(phrases)
    tokenizer = clip_tokenizer()
    for row, phrase in enumerate(phrases):
        ids = tokenizer(phrase, return_tensors="pt", truncation=True, max_length=77)["input_ids"]
        with torch.no_grad():
            single = clip.get_text_features(input_ids=ids).pooler_output[0]
        torch.testing.assert_close(batched[row], single / single.norm(), atol=1e-5, rtol=1e-4)


def test_user_lists_override_defaults_and_add_categories(tmp_path):
    defaults = Categories.load()
    assert all(len(c.phrases) >= 20 for c in defaults.items)
    (tmp_path / "mediums.txt").write_text("\ufefffresco\n\n  tempera  \n", encoding="utf-8")
    (tmp_path / "colors.txt").write_text("red\nblue\n")
    loaded = Categories.load(tmp_path)
    assert loaded.names() == ["artists", "colors", "flavors", "mediums", "movements"]
    by_name = {c.name: c for c in loaded.items}
    assert by_name["mediums"].phrases == ("fresco", "tempera")
    assert by_name["artists"] == next(c for c in defaults.items if c.name == "artists")
    assert Categories.load(tmp_path / "missing").names() == defaults.names()


def test_two_files_for_one_category_in_a_folder_is_an_error(tmp_path):
    (tmp_path / "flavors.txt").write_text("a\n")
    (tmp_path / "flavors.top3.txt").write_text("b\n")
    with pytest.raises(ValueError, match="flavors"):
        Categories.load(tmp_path)


def test_missing_models_give_clear_errors(models_dir, tmp_path):
    root, _, _ = models_dir
    empty_root = tmp_path / "models" / "BLIP"
    empty_root.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"BLIP is empty: download Salesforce/blip-image-captioning-base"):
        locate_model(empty_root, "Salesforce/blip-image-captioning-base")
    assert locate_model(root / "CLIP", "openai/clip-vit-large-patch14") == root / "CLIP" / "tiny"

    missing = tmp_path / "models" / "BLIP" / "nothing"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*blip-image-captioning-base"):
        load_blip(missing)
    with pytest.raises(FileNotFoundError, match="openai/clip-vit-large-patch14"):
        load_clip(tmp_path / "models" / "CLIP" / "nothing")

    pickled = tmp_path / "pickled"
    shutil.copytree(root / "BLIP" / "tiny", pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pickle weights \(pytorch_model.bin\).*safetensors"):
        load_blip(pickled)
    with pytest.raises(ValueError, match="'clip' model, not 'blip'"):
        load_blip(root / "CLIP" / "tiny")


def test_preprocessing_matches_transformers_processors():
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))  # 48 wide, 40 high
    clip_ours = ImagePreprocess(size=(32, 32), shortest_edge=32)(picture)
    clip_theirs = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})(
        images=picture, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(clip_ours, clip_theirs, atol=1e-5, rtol=1e-5)
    blip_ours = ImagePreprocess(size=(24, 36), shortest_edge=None)(picture.convert("RGBA"))
    blip_theirs = BlipImageProcessorPil(size={"height": 24, "width": 36})(images=picture, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(blip_ours, blip_theirs, atol=1e-5, rtol=1e-5)


def test_preprocess_reads_the_folders_processor_config(models_dir, interrogator):
    root, _, _ = models_dir
    assert interrogator.clip.preprocess == ImagePreprocess(size=(32, 32), shortest_edge=32)
    assert interrogator.blip.preprocess == ImagePreprocess(size=(32, 32), shortest_edge=None)
    assert ImagePreprocess.for_clip(root / "nowhere", 224) == ImagePreprocess(size=(224, 224), shortest_edge=224)


def test_options_from_settings():
    options = InterrogateOptions.from_settings({"interrogate_clip_skip_categories": ["artists"],
                                                "interrogate_clip_dict_limit": 0, "sd_model_checkpoint": "x"})
    assert options.interrogate_clip_skip_categories == ("artists",)
    assert options.interrogate_clip_dict_limit == 0 and options.interrogate_clip_min_length == 24
    with pytest.raises(ValueError, match="num_beams"):
        InterrogateOptions(interrogate_clip_num_beams=0)
