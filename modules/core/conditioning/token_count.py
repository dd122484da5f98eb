"""The UI's token counter ("n/75"): the longest text a prompt becomes over its schedule."""

from __future__ import annotations

from transformers import CLIPTokenizer

from modules.core.conditioning.clip_text import ClipTextConditioner, TextOptions
from modules.core.conditioning.prompt_parser import (
    extract_extra_networks,
    get_learned_conditioning_prompt_schedules,
    split_and,
)


def prompt_token_count(tokenizer: CLIPTokenizer, text: str, steps: int, positive: bool,
                       options: TextOptions = TextOptions()) -> tuple[int, int]:
    """(tokens used, tokens available) for the longest variant of ``text``, as A1111 counts."""
    text, _ = extract_extra_networks(text)
    parts = [part for part, _ in split_and(text)] if positive else [text]
    schedules = get_learned_conditioning_prompt_schedules(parts, max(1, steps))
    counter = ClipTextConditioner(tokenizer, None, options)
    return max((counter.token_count(variant) for schedule in schedules for _, variant in schedule), key=lambda c: c[0])
