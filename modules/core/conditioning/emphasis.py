"""Attention emphasis in prompts: ``(a)`` ×1.1, ``[a]`` ÷1.1, ``(a:1.5)``, escapes, and ``BREAK``.

Behaviour follows ``a1111-compat.md`` §5.3: brackets nest multiplicatively, unclosed brackets apply
to the end of the text, stray closers are literal text, adjacent equal weights merge, and ``BREAK``
becomes a marker segment ``("BREAK", -1)`` that forces a new 75-token chunk.
"""

from __future__ import annotations

import re

ROUND = 1.1
SQUARE = 1 / 1.1
BREAK_MARKER = ("BREAK", -1.0)

_TOKEN = re.compile(
    r"""
    \\\( | \\\) | \\\[ | \\] | \\\\ | \\      # escapes (and a lone backslash)
    | \( | \[                                 # openers
    | :\s*([+-]?[.\d]+)\s*\)                  # ":1.3)" closes a weighted round bracket
    | \) | ]                                  # closers
    | [^\\()\[\]:]+                           # plain text
    | :                                       # a colon that is not a weight
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    segments: list[list] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for segment in segments[start:]:
            segment[1] *= factor

    for match in _TOKEN.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            segments.append([token[1:], 1.0])
        elif token == "(":
            open_round.append(len(segments))
        elif token == "[":
            open_square.append(len(segments))
        elif weight is not None and open_round:
            scale_from(open_round.pop(), float(weight))
        elif token == ")" and open_round:
            scale_from(open_round.pop(), ROUND)
        elif token == "]" and open_square:
            scale_from(open_square.pop(), SQUARE)
        else:
            for index, part in enumerate(_BREAK.split(token)):
                if index > 0:
                    segments.append(list(BREAK_MARKER))
                segments.append([part, 1.0])

    for start in open_round:
        scale_from(start, ROUND)
    for start in open_square:
        scale_from(start, SQUARE)
    return _merge_equal_weights(segments) if segments else [("", 1.0)]


def _merge_equal_weights(segments: list[list]) -> list[tuple[str, float]]:
    merged: list[list] = [segments[0]]
    for text, weight in segments[1:]:
        if merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(text, weight) for text, weight in merged]
