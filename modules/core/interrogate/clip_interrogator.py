"""CLIP interrogator: A1111's "Interrogate CLIP" (img2img 📎, ``POST /sdapi/v1/interrogate`` "clip").

A BLIP caption of the image, followed by the phrases of each category list that CLIP ranks closest
to the image. The result is composed as A1111's ``modules/interrogate.py`` composes it::

    <caption>, <best phrase(s) of category 1>, <best phrase(s) of category 2>, ...

- a category is a ``*.txt`` file, one phrase per line, named after the file. Categories come in
  file-name order (A1111 takes the directory's listing order, which the file system decides);
  phrases are written verbatim (A1111 adds no "by" to artist names);
- a file named ``<name>.top<N>.txt`` contributes its N best phrases, any other file its best one;
- a phrase's score is the softmax, over its category, of 100 × cosine(image, phrase) (OpenAI
  CLIP's logit scale). With ``interrogate_return_ranks`` a phrase is written ``(phrase:0.123)``;
- ``interrogate_clip_dict_limit`` keeps the first N phrases of each file (0: all of them);
- ``interrogate_clip_skip_categories`` names categories to leave out.

BLIP runs as A1111 runs it: the decoder starts from BLIP's caption prompt "a picture of " and
searches with ``interrogate_clip_num_beams`` beams (1 = greedy), no sampling, no repetition
penalty; the length bounds count the whole decoded sequence (start token and prompt included),
and the prompt is cut off the caption.

Models are Hugging Face folders (config.json, *.safetensors, tokenizer and preprocessor files):
``models/BLIP/<name>/`` (e.g. Salesforce/blip-image-captioning-base) and ``models/CLIP/<name>/``
(e.g. openai/clip-vit-large-patch14, the ViT-L/14 that A1111 uses). Pickle weights are refused.
The interrogator never moves a model: the memory manager places both on ``device`` in ``dtype``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, BlipForConditionalGeneration, CLIPModel, PreTrainedTokenizerBase

DEFAULT_LISTS = Path(__file__).resolve().parent / "lists"
BLIP_PROMPT = "a picture of "  # the prompt BLIP's caption models were fine-tuned with
BLIP_SUGGESTION = "Salesforce/blip-image-captioning-base"
CLIP_SUGGESTION = "openai/clip-vit-large-patch14"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LOGIT_SCALE = 100.0  # A1111 ranks with OpenAI CLIP's fixed scale, not the checkpoint's logit_scale
TEXT_BATCH = 256

_TOPN = re.compile(r"^(?P<name>.+)\.top(?P<count>\d+)$")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class InterrogateOptions:
    """A1111's interrogate settings, under their ``config.json`` keys."""

    interrogate_keep_models_in_memory: bool = False  # read by whoever owns the models, not here
    interrogate_return_ranks: bool = False
    interrogate_clip_num_beams: int = 1
    interrogate_clip_min_length: int = 24
    interrogate_clip_max_length: int = 48
    interrogate_clip_dict_limit: int = 1500
    interrogate_clip_skip_categories: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "interrogate_clip_skip_categories", tuple(self.interrogate_clip_skip_categories))
        if self.interrogate_clip_num_beams < 1:
            raise ValueError(f"interrogate_clip_num_beams must be at least 1, not {self.interrogate_clip_num_beams}")
        if self.interrogate_clip_max_length < 1 or self.interrogate_clip_min_length < 0:
            raise ValueError("interrogate_clip_min_length must be >= 0 and interrogate_clip_max_length >= 1")
        if self.interrogate_clip_dict_limit < 0:
            raise ValueError(f"interrogate_clip_dict_limit must be >= 0 (0: no limit), not {self.interrogate_clip_dict_limit}")

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> "InterrogateOptions":
        """The options named in ``values`` (other keys are ignored), defaults for the rest."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


# --------------------------------------------------------------------------------------- categories


@dataclass(frozen=True)
class Category:
    name: str  # the file name without ``.top<N>`` and ``.txt``
    stem: str  # the file name without ``.txt``: A1111 lists categories (and skips them) by it
    phrases: tuple[str, ...]
    topn: int = 1
    source: Path | None = None

    @classmethod
    def read(cls, path: Path) -> "Category":
        match = _TOPN.match(path.stem)
        name, topn = (match["name"], int(match["count"])) if match else (path.stem, 1)
        text = path.read_text(encoding="utf-8-sig", errors="replace")
        phrases = tuple(line.strip() for line in text.splitlines() if line.strip())
        return cls(name=name, stem=path.stem, phrases=phrases, topn=max(topn, 1), source=path)

    def limited(self, dict_limit: int) -> tuple[str, ...]:
        return self.phrases[:dict_limit] if dict_limit else self.phrases


@dataclass(frozen=True)
class Categories:
    items: tuple[Category, ...]

    @classmethod
    def load(cls, user_folder: Path | None = None, defaults_folder: Path = DEFAULT_LISTS) -> "Categories":
        """The default lists, with the user's ``*.txt`` files (``<data>/models/interrogate``) added;
        a user file replaces the default file of the same category name."""
        by_name: dict[str, Category] = {}
        for folder in (defaults_folder, user_folder):
            if folder is None or not Path(folder).is_dir():
                continue
            seen: dict[str, Path] = {}
            for path in sorted(Path(folder).glob("*.txt")):
                category = Category.read(path)
                if category.name in seen:
                    raise ValueError(f"{folder}: {seen[category.name].name} and {path.name} are both "
                                     f"category {category.name!r}; keep one of them")
                seen[category.name] = path
                by_name[category.name] = category
        return cls(tuple(by_name[name] for name in sorted(by_name)))

    def names(self) -> list[str]:
        return [category.name for category in self.items]

    def without(self, skip: Iterable[str]) -> tuple[Category, ...]:
        skip = set(skip)
        return tuple(c for c in self.items if c.name not in skip and c.stem not in skip)


# ------------------------------------------------------------------------------ image preprocessing


@dataclass(frozen=True)
class ImagePreprocess:
    """CLIPImageProcessor / BlipImageProcessor's steps without torchvision: RGB; resize (the
    shortest edge to ``shortest_edge``, or straight to ``size`` when it is None), bicubic, on 8-bit
    pixels; centre crop to ``size`` (rounded as OpenAI CLIP's torchvision crop rounds); 0..1;
    normalise."""

    size: tuple[int, int]  # (height, width) of the result
    shortest_edge: int | None
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    resample: int = Image.Resampling.BICUBIC

    @classmethod
    def for_clip(cls, folder: Path, image_size: int) -> "ImagePreprocess":
        config = _read_json(folder / "preprocessor_config.json")
        edge = _edge(config.get("size"), image_size)
        crop = _hw(config.get("crop_size"), (edge, edge))
        return cls(size=crop, shortest_edge=edge, **_normalisation(config))

    @classmethod
    def for_blip(cls, folder: Path, image_size: int) -> "ImagePreprocess":
        config = _read_json(folder / "preprocessor_config.json")
        return cls(size=_hw(config.get("size"), (image_size, image_size)), shortest_edge=None, **_normalisation(config))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """A ``[1, 3, H, W]`` float32 tensor."""
        image = image.convert("RGB")
        height, width = self.size
        if self.shortest_edge is None:
            image = image.resize((width, height), resample=self.resample)
        else:
            short, long = sorted(image.size)
            scaled = (self.shortest_edge, int(self.shortest_edge * long / short))
            target = scaled if image.width <= image.height else scaled[::-1]
            image = image.resize(target, resample=self.resample)
            top = int(round((image.height - height) / 2.0))
            left = int(round((image.width - width) / 2.0))
            image = image.crop((left, top, left + width, top + height))
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        pixels = (pixels - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _edge(size: Any, default: int) -> int:
    if isinstance(size, int):
        return size
    if isinstance(size, Mapping):
        return int(size.get("shortest_edge") or min(size.get("height", default), size.get("width", default)))
    return default


def _hw(size: Any, default: tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if isinstance(size, Mapping) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    return default


def _normalisation(config: Mapping[str, Any]) -> dict:
    out = {}
    if config.get("image_mean"):
        out["mean"] = tuple(float(v) for v in config["image_mean"])
    if config.get("image_std"):
        out["std"] = tuple(float(v) for v in config["image_std"])
    if "resample" in config:
        out["resample"] = int(config["resample"])
    return out


# ---------------------------------------------------------------------------------------- loading


@dataclass
class BlipParts:
    model: BlipForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    preprocess: ImagePreprocess
    folder: Path


@dataclass
class ClipParts:
    model: CLIPModel
    tokenizer: PreTrainedTokenizerBase
    preprocess: ImagePreprocess
    folder: Path


def locate_model(root: Path, suggestion: str) -> Path:
    """The model folder in ``models/BLIP`` or ``models/CLIP``: ``root`` itself when it holds a
    config.json, else its first sub-folder (by name) that does."""
    root = Path(root)
    if (root / "config.json").is_file():
        return root
    found = sorted(p for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []
    if not found:
        raise FileNotFoundError(f"{root} is empty: download {suggestion} (Hugging Face layout) "
                                f"into {root / suggestion.split('/')[-1]}/")
    return found[0]


def _check_folder(folder: Path, model_type: str, suggestion: str, tokenizer_files: tuple[str, ...]) -> None:
    hint = f"download {suggestion} (config.json, model.safetensors, tokenizer and preprocessor files) into {folder}/"
    if not folder.is_dir() or not any(folder.iterdir()):
        raise FileNotFoundError(f"{folder} is missing or empty: {hint}")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: {hint}")
    found_type = _read_json(folder / "config.json").get("model_type")
    if found_type != model_type:
        raise ValueError(f"{folder}/config.json describes a {found_type!r} model, not {model_type!r}: {hint}")
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        if pickles:
            raise ValueError(f"{folder} holds only pickle weights ({', '.join(pickles)}); Hanga loads "
                             f".safetensors weights only: download model.safetensors into {folder}/")
        raise FileNotFoundError(f"{folder} has no .safetensors weights: {hint}")
    if not any((folder / name).is_file() for name in tokenizer_files):
        raise FileNotFoundError(f"{folder} has no tokenizer ({' or '.join(tokenizer_files)}): {hint}")


def _from_pretrained(loader, folder: Path):
    try:
        return loader.from_pretrained(folder, local_files_only=True, use_safetensors=True).eval()
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder}: cannot load the model: {error}") from error


def load_blip(folder: Path) -> BlipParts:
    """A BLIP captioning model from a Hugging Face folder, in float32 on the CPU."""
    folder = Path(folder)
    _check_folder(folder, "blip", BLIP_SUGGESTION, ("tokenizer.json", "vocab.txt"))
    model = _from_pretrained(BlipForConditionalGeneration, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    preprocess = ImagePreprocess.for_blip(folder, model.config.vision_config.image_size)
    return BlipParts(model=model, tokenizer=tokenizer, preprocess=preprocess, folder=folder)


def load_clip(folder: Path) -> ClipParts:
    """A CLIP model (both towers) from a Hugging Face folder, in float32 on the CPU."""
    folder = Path(folder)
    _check_folder(folder, "clip", CLIP_SUGGESTION, ("tokenizer.json", "vocab.json"))
    model = _from_pretrained(CLIPModel, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    preprocess = ImagePreprocess.for_clip(folder, model.config.vision_config.image_size)
    return ClipParts(model=model, tokenizer=tokenizer, preprocess=preprocess, folder=folder)


# ------------------------------------------------------------------------------------ interrogator


def _pooled(output: Any) -> torch.Tensor:
    """``get_*_features`` returns the projected embedding as a tensor or, in transformers 5, as
    the ``pooler_output`` of a model output."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _normalised(features: torch.Tensor) -> torch.Tensor:
    features = features.float()
    return features / features.norm(dim=-1, keepdim=True)


class ClipInterrogator:
    """Caption with BLIP, rank category phrases with CLIP. Holds no global state; the text
    features of each category are cached here, keyed by the category's phrases, and recomputed
    when a list's content changes."""

    def __init__(self, blip: BlipParts, clip: ClipParts, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, caption_prompt: str = BLIP_PROMPT):
        self.blip = blip
        self.clip = clip
        self.device = torch.device(device)
        self.dtype = dtype
        self.caption_prompt = caption_prompt
        self._text_features: dict[str, tuple[str, torch.Tensor]] = {}  # name -> (content digest, features)

    @torch.inference_mode()
    def caption(self, image: Image.Image, options: InterrogateOptions = InterrogateOptions()) -> str:
        pixels = self.blip.preprocess(image).to(self.device, self.dtype)
        prompt_ids = self.blip.tokenizer(self.caption_prompt, return_tensors="pt")["input_ids"].to(self.device)
        # A1111 lets min exceed max (generation then stops at max); keep that instead of failing.
        max_length = options.interrogate_clip_max_length
        min_length = min(options.interrogate_clip_min_length, max_length)
        output = self.blip.model.generate(
            pixel_values=pixels, input_ids=prompt_ids, num_beams=options.interrogate_clip_num_beams,
            min_length=min_length, max_length=max_length, do_sample=False, repetition_penalty=1.0,
        )
        # generate() swaps [CLS] for BLIP's start token and drops the final [SEP] of the prompt.
        generated = output[0, prompt_ids.shape[1] - 1:]
        return self.blip.tokenizer.decode(generated, skip_special_tokens=True).strip()

    @torch.inference_mode()
    def image_features(self, image: Image.Image) -> torch.Tensor:
        """The image's unit-length CLIP embedding, ``[dim]`` float32."""
        pixels = self.clip.preprocess(image).to(self.device, self.dtype)
        return _normalised(_pooled(self.clip.model.get_image_features(pixel_values=pixels)))[0]

    @torch.inference_mode()
    def rank(self, image_features: torch.Tensor, category: Category, dict_limit: int = 0) -> list[tuple[str, float]]:
        """The category's best ``topn`` phrases with their softmax scores, best first."""
        phrases = category.limited(dict_limit)
        if not phrases:
            return []
        text = self._category_features(category.name, phrases)
        scores = (LOGIT_SCALE * image_features.to(text.device) @ text.T).softmax(dim=-1)
        values, indices = scores.topk(min(category.topn, len(phrases)))
        return [(phrases[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]

    def interrogate(self, image: Image.Image, categories: Categories,
                    options: InterrogateOptions = InterrogateOptions()) -> str:
        parts = [self.caption(image, options)]
        features = self.image_features(image)
        for category in categories.without(options.interrogate_clip_skip_categories):
            for phrase, score in self.rank(features, category, options.interrogate_clip_dict_limit):
                parts.append(f"({phrase}:{score:.3f})" if options.interrogate_return_ranks else phrase)
        return ", ".join(part for part in parts if part)

    def _category_features(self, name: str, phrases: tuple[str, ...]) -> torch.Tensor:
        digest = hashlib.sha256("\n".join(phrases).encode("utf-8")).hexdigest()
        cached = self._text_features.get(name)
        if cached is None or cached[0] != digest:
            cached = (digest, self._encode_phrases(phrases))
            self._text_features[name] = cached
        return cached[1]

    def _encode_phrases(self, phrases: tuple[str, ...]) -> torch.Tensor:
        """Unit-length CLIP text embeddings ``[len(phrases), dim]``, in batches. Rows are padded
        with the end token: CLIP's text encoder is causal and pools at the first end token, so the
        padding changes nothing."""
        tokenizer = self.clip.tokenizer
        max_length = self.clip.model.config.text_config.max_position_embeddings
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
        chunks = []
        for start in range(0, len(phrases), TEXT_BATCH):
            ids = tokenizer(list(phrases[start:start + TEXT_BATCH]), truncation=True, max_length=max_length)["input_ids"]
            input_ids = torch.full((len(ids), max(map(len, ids))), pad_id, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for row, sequence in enumerate(ids):
                input_ids[row, :len(sequence)] = torch.tensor(sequence)
                mask[row, :len(sequence)] = 1
            output = self.clip.model.get_text_features(input_ids=input_ids.to(self.device),
                                                       attention_mask=mask.to(self.device))
            chunks.append(_normalised(_pooled(output)))
        return torch.cat(chunks)
