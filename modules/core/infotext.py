"""Infotext: the "generation parameters" text A1111 v1.10.1 writes into images, built and parsed.

Layout (a1111-compat.md §3.2)::

    <prompt, any number of lines>
    Negative prompt: <negative prompt, any number of lines>     (omitted when the negative is empty)
    Steps: 20, Sampler: Euler a, ...                             (one line of "Key: value" pairs)

Third-party readers (and A1111 itself) parse this text with one regex, so both directions here are
written against that regex: whatever `build_infotext` writes, `parse_infotext` reads back.
Pure string functions: no torch, no Gradio, no PIL (see `png_meta` for the image containers).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping

from packaging.version import InvalidVersion, Version

from modules.core.conditioning.emphasis import parse_prompt_attention

NEGATIVE_PREFIX = "Negative prompt:"

# The fixed part of A1111's parameter line, in emission order (§3.3). Extension/feature keys
# ("extra" params) follow these, then "Version".
INFOTEXT_KEY_ORDER: tuple[str, ...] = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration",
    "Size", "Model hash", "Model", "FP8 weight", "Cache FP16 weight for LoRA", "VAE hash", "VAE",
    "Variation seed", "Variation seed strength", "Seed resize from", "Denoising strength",
    "Conditional mask weight", "Clip skip", "ENSD", "Token merging ratio", "Token merging ratio hr",
    "Init image hash", "RNG", "Tiling",
)

# A1111's parameter regex (§3.5), kept verbatim: third-party readers use the same one, so the
# quoting rules in `quote` are defined by what this regex can read back.
PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
IMAGE_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
MIN_PARAMS_IN_PARAM_LINE = 3


# ---------------------------------------------------------------------------------------- building

def quote(value: object) -> str:
    """One parameter value as written after ``Key: ``.

    A1111 JSON-quotes a value only when it contains ``,``, ``\\n`` or ``:``; we do the same, and
    otherwise write values byte-for-byte as A1111 does, except in two cases where A1111 writes the
    value raw and its own parser then misreads it (so we quote it too):

    * a value starting with ``"``: the regex tries its quoted-string branch first, so ``"x"`` would
      come back JSON-decoded as ``x``, and an unclosed ``"x`` can swallow the following pairs when a
      later quoted value closes the string;
    * a value with whitespace at either end: ``:\\s*`` eats leading whitespace, and the parser strips
      the text, which eats trailing whitespace on the last pair.

    A ``"`` inside a value (``a "b" c``) is harmless to the regex, so such values stay raw as in
    A1111, even though §12.3 lists ``"`` among the characters to quote.
    """
    text = str(value)
    a1111_quotes = "," in text or "\n" in text or ":" in text
    if isinstance(value, (dict, list)) and a1111_quotes:
        # A1111 JSON-encodes the object itself (extensions such as Tiled Diffusion store a dict):
        # a bare JSON object, which `split_infotext` reads back whole.
        return json.dumps(value, ensure_ascii=False)
    if a1111_quotes or text.startswith('"') or text != text.strip():
        return json.dumps(text, ensure_ascii=False)
    return text


def build_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """Infotext for one image; ``params`` must already be in emission order (see `order_params`)."""
    pairs = (key if str(value) == key else f"{key}: {quote(value)}"
             for key, value in params.items() if value is not None)
    negative_line = f"\n{NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    # A1111 strips the assembled text; doing the same keeps byte equality when a prompt has
    # leading or trailing whitespace (the parser would strip it anyway).
    return f"{prompt}{negative_line}\n{', '.join(pairs)}".strip()


def order_params(fixed: Mapping[str, object], extra: Mapping[str, object], version: str | None) -> dict:
    """The parameter dict in A1111's emission order (§3.3), with ``None`` values dropped.

    Same result as A1111's dict literal ``{<fixed keys in order>, **extra, "Version": version}``: an
    extra key that is also a fixed key (e.g. "Denoising strength") takes the fixed position, and so
    does "Version" if ``extra`` already holds it.
    """
    unknown = [key for key in fixed if key not in INFOTEXT_KEY_ORDER]
    if unknown:
        raise ValueError(f"not fixed infotext keys (pass them as extra): {unknown}")
    merged: dict[str, object] = {key: fixed.get(key) for key in INFOTEXT_KEY_ORDER}
    merged.update(extra)
    merged["Version"] = version
    return {key: value for key, value in merged.items() if value is not None}


# ----------------------------------------------------------------------------------------- parsing

def split_infotext(text: str) -> tuple[str, str, dict[str, object]]:
    """Prompt, negative prompt and the parameter line's pairs exactly as written (values unquoted,
    nothing split or added). ``build_infotext(*split_infotext(text))`` gives ``text`` back for any
    infotext A1111 (or Hanga) wrote.

    Values are strings, except a bare JSON object or array (what A1111 writes for an extension's
    dict value), which comes back decoded. A1111's own reader stops such a value at its first comma
    and loses the rest; reading it whole is the one place where we read more than A1111 does.
    """
    lines = text.strip().split("\n")
    param_line = lines.pop()
    if len(PARAM_RE.findall(param_line)) < MIN_PARAMS_IN_PARAM_LINE:
        lines.append(param_line)  # too few pairs: it is prompt text
        param_line = ""
    prompt, negative_prompt = split_prompts(lines)
    return prompt, negative_prompt, _param_pairs(param_line)


_JSON = json.JSONDecoder()


def _param_pairs(line: str) -> dict[str, object]:
    """PARAM_RE's pairs (A1111's ``findall``), reading a bare JSON object/array value whole."""
    pairs: dict[str, object] = {}
    position = 0
    while True:
        match = PARAM_RE.search(line, position)
        if match is None:
            return pairs
        key, value = match.group(1), match.group(2)
        position = match.end()
        if value[:1] in ("{", "["):
            start = match.start(2)
            try:
                decoded, end = _JSON.raw_decode(line, start)
            except ValueError:
                decoded, end = None, start
            if end > start and line[end:end + 1] in (",", ""):
                pairs[key] = decoded
                position = end + 1
                continue
        if value:  # A1111 drops empty values (its parser fails on them); so do we
            pairs[key] = _unquote(value)


def parse_infotext(text: str, backcompat: bool = True) -> dict[str, object]:
    """Parse an infotext like A1111's ``parse_generation_parameters`` (§3.5). Never raises.

    Values read from the text are strings; the defaults filled in for missing keys keep A1111's
    types (``0``, ``32``, ``False``), because UI paste code casts per component anyway.
    ``backcompat`` is A1111's ``auto_backcompat`` setting (see `apply_backcompat`).
    """
    prompt, negative_prompt, pairs = split_infotext(text)
    result = split_sizes(pairs)
    # Style extraction (setting `infotext_styles`) belongs here: it rewrites prompt and
    # negative_prompt and adds "Styles array" before they are stored.
    result["Prompt"] = prompt
    result["Negative prompt"] = negative_prompt
    _apply_legacy_keys(result)
    _add_missing_defaults(result, prompt, negative_prompt)
    if backcompat:
        apply_backcompat(result)
    return result


def split_prompts(lines: Iterable[str]) -> tuple[str, str]:
    """Prompt and negative prompt from the lines above the parameter line.

    Like A1111, each line is stripped, and *every* line that starts with ``Negative prompt:`` loses
    that prefix (not only the first), so whitespace at line ends does not survive a round trip.
    """
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PREFIX):
            line = line[len(NEGATIVE_PREFIX):].strip()
            negative_lines.append(line)
        elif negative_lines:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)
    return "\n".join(prompt_lines), "\n".join(negative_lines)


def split_sizes(pairs: Mapping[str, object]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs.items():
        size = IMAGE_SIZE_RE.match(value) if isinstance(value, str) else None
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    return result


def _unquote(value: str) -> str:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    try:
        return json.loads(value)  # text between double quotes decodes to a str or fails
    except ValueError:
        return value  # not valid JSON: keep the text as written


# Legacy (pre-1.9) sampler names carried the schedule: "DPM++ 2M Karras". Suffixes are the schedule
# labels, their internal names and A1111's alias "SGMUniform"; longest first, so that
# "SGM Uniform" is not read as "Uniform".
_SCHEDULE_SUFFIXES: tuple[tuple[str, str], ...] = tuple(sorted(
    (
        (suffix, label)
        for label, *aliases in (
            ("Uniform", "uniform"), ("Karras", "karras"), ("Exponential", "exponential"),
            ("Polyexponential", "polyexponential"), ("SGM Uniform", "sgm_uniform", "SGMUniform"),
            ("KL Optimal", "kl_optimal"), ("Align Your Steps", "align_your_steps"),
            ("Simple", "simple"), ("Normal", "normal"), ("DDIM", "ddim"), ("Beta", "beta"),
        )
        for suffix in (label, *aliases)
    ),
    key=lambda pair: -len(pair[0]),
))


def split_legacy_sampler(name: str) -> tuple[str, str | None]:
    """``"DPM++ 2M Karras"`` → ``("DPM++ 2M", "Karras")``; a name without a schedule → ``(name, None)``."""
    for suffix, label in _SCHEDULE_SUFFIXES:
        if name.endswith(" " + suffix):
            return name[: -len(suffix) - 1], label
    return name, None


def _apply_legacy_keys(result: dict[str, object]) -> None:
    # A schedule inside the sampler name wins over a "Schedule type" key, as in A1111's paste.
    for sampler_key, schedule_key in (("Sampler", "Schedule type"), ("Hires sampler", "Hires schedule type")):
        sampler = result.get(sampler_key)
        if isinstance(sampler, str):
            sampler, schedule = split_legacy_sampler(sampler)
            if schedule is not None:
                result[sampler_key], result[schedule_key] = sampler, schedule
    hypernet = result.get("Hypernet")
    if hypernet is not None:
        strength = result.get("Hypernet strength", "1.0")
        result["Prompt"] = f"{result['Prompt']}<hypernet:{hypernet}:{strength}>"
    _convert_first_pass_size(result)


def _convert_first_pass_size(result: dict[str, object]) -> None:
    """Pre-1.0 hires fix wrote the final size as ``Size`` and the first pass as ``First pass size``
    (0x0 meaning "about 512² pixels"); today ``Size`` is the first pass and the final size is
    ``Hires resize``."""
    first_w, first_h = result.get("First pass size-1"), result.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    try:
        first_w, first_h = int(first_w), int(first_h)
        width, height = int(result.get("Size-1", 512)), int(result.get("Size-2", 512))
    except (TypeError, ValueError):
        return
    if first_w == 0 or first_h == 0:
        scale = math.sqrt(512 * 512 / (width * height))
        first_w, first_h = math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64
    result["Size-1"], result["Size-2"] = first_w, first_h
    result["Hires resize-1"], result["Hires resize-2"] = width, height


# A1111 fills these when the infotext lacks them, so that pasting an old infotext resets the
# controls to what produced it rather than keeping whatever the UI currently shows.
_DEFAULTS: tuple[tuple[str, object], ...] = (
    ("Clip skip", "1"),
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)


def _add_missing_defaults(result: dict[str, object], prompt: str, negative_prompt: str) -> None:
    for key, value in _DEFAULTS:
        result.setdefault(key, value)
    if "Hires resize-1" not in result:  # both halves are reset together, as A1111 does
        result["Hires resize-1"] = result["Hires resize-2"] = 0
    if result["FP8 weight"] != "Disable":
        result.setdefault("Cache FP16 weight for LoRA", False)
    if _uses_emphasis(prompt) or _uses_emphasis(negative_prompt):
        result.setdefault("Emphasis", "Original")
    result.setdefault("Refiner switch by sampling steps", False)


def _uses_emphasis(prompt: str) -> bool:
    """Whether any text in the prompt gets a weight other than 1 (an old infotext then implies the
    "Original" emphasis mode)."""
    try:
        segments = parse_prompt_attention(prompt)
    except ValueError:
        return False  # a malformed weight such as "(a:.)"; A1111 fails the whole paste here
    return any(weight != 1.0 for text, weight in segments if text != "BREAK")


# ------------------------------------------------------------------------------------ back-compat

_V160, _V170_TSNR, _V180 = Version("1.6.0"), Version("1.7.0.post225"), Version("1.8.0")


def infotext_version(text: object) -> Version | None:
    """The A1111 version an infotext's ``Version`` names, read as A1111 reads it: ``v1.10.1``,
    ``1.6.0``, ``v1.7.0-225-g…`` (→ 1.7.0, 225 commits later). Anything else (Forge's
    ``f2.0.1v1.10.1-…``, Hanga's ``hanga-0.1.0``) is no A1111 version and gets no back-compat."""
    if not isinstance(text, str):
        return None
    match = re.match(r"([^-]+-[^-]+)-.*", text)
    try:
        return Version(match.group(1) if match else text)
    except InvalidVersion:
        return None


def apply_backcompat(result: dict[str, object]) -> None:
    """Options that reproduce images made by older A1111 versions, keyed on ``Version`` (§3.5)."""
    version = infotext_version(result.get("Version"))
    if version is None:
        return
    if version < _V160 and "[" in str(result.get("Prompt", "")):
        result["Old prompt editing timelines"] = True
    if version < _V160 and result.get("Sampler", "") in ("DDIM", "PLMS"):
        result["Pad conds v0"] = True
    if version < _V170_TSNR:
        result["Downcast alphas_cumprod"] = True
    if version < _V180 and result.get("Refiner"):
        result["Refiner switch by sampling steps"] = True
