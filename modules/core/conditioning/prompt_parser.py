"""Prompt text before encoding: comments, extra-network tags, ``AND`` parts and prompt schedules.

Behaviour follows ``a1111-compat.md`` §5.1/§5.2/§5.6 and the "Comments" processing script (§1.2).
Emphasis brackets are *not* interpreted here: they stay verbatim in the scheduled texts for
``emphasis.parse_prompt_attention``.

Step conventions: a schedule is a list of ``(end_at_step, text)`` where ``end_at_step`` counts steps
from 1, and the sampler's denoiser call with 0-based index ``step`` uses the first entry with
``step <= end_at_step`` (so ``[a:b:3]`` gives ``a`` to calls 0–3, as A1111 does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from collections.abc import Iterator

Schedule = list[tuple[int, str]]  # (end_at_step, text), end steps increasing, last == steps
MulticondPrompt = list[tuple[Schedule, float]]  # one prompt's AND parts: (schedule, weight)

# --------------------------------------------------------------------------------------------------
# Comments (setting ``enable_prompt_comments``)

# Two passes, as A1111 does: a line that *starts* with "#" disappears together with one of its line
# breaks; a "#" later in a line removes the rest of that line but keeps (or adds) a line break.
_WHOLE_LINE_COMMENT = re.compile(r"(?:^|\n)#[^\n]*(?:\n|$)")
_TRAILING_COMMENT = re.compile(r"#[^\n]*(?:\n|$)")


def strip_comments(text: str) -> str:
    """Remove ``#`` comments exactly as A1111's "Comments" script does.

    ``"a\\n# note\\nb"`` → ``"a\\nb"`` (the comment line is gone), ``"a # note"`` → ``"a \\n"`` (a
    comment at the end of the text leaves a line break behind, which encodes as whitespace).
    """
    text = _WHOLE_LINE_COMMENT.sub("\n", text)
    return _TRAILING_COMMENT.sub("\n", text)


# --------------------------------------------------------------------------------------------------
# Extra networks: <kind:arg:arg...>

_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


@dataclass
class ExtraNetworkCall:
    """One ``<kind:args>`` tag. ``items`` keeps the raw ``:``-separated arguments in order, as A1111's
    ``ExtraNetworkParams.items`` does (some extensions read it instead of positional/named)."""

    kind: str
    positional: list[str]
    named: dict[str, str]
    items: list[str] = field(default_factory=list)


def _extra_network_call(kind: str, args: str) -> ExtraNetworkCall:
    items = args.split(":")
    positional, named = [], {}
    for item in items:
        key_value = item.split("=", 2)
        # Only "k=v" with exactly one "=" is named; "a=b=c" stays a positional item, whole.
        if len(key_value) == 2:
            named[key_value[0]] = key_value[1]
        else:
            positional.append(item)
    return ExtraNetworkCall(kind, positional, named, items)


def extract_extra_networks(text: str) -> tuple[str, list[ExtraNetworkCall]]:
    """Remove every ``<kind:args>`` tag (known kind or not) and return the calls in prompt order.

    Only the tag itself is removed; the text around it, spaces and commas included, is left as is.
    """
    calls: list[ExtraNetworkCall] = []

    def take(match: re.Match) -> str:
        calls.append(_extra_network_call(match.group(1), match.group(2)))
        return ""

    return _EXTRA_NETWORK.sub(take, text), calls


# --------------------------------------------------------------------------------------------------
# Composable prompts: "a AND b:0.5"

_AND = re.compile(r"\bAND\b")
# The part's text keeps its leading whitespace; a trailing ":number" (and trailing space) is its weight.
_PART_WEIGHT = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.S)


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Split a positive prompt on the word ``AND`` into ``(text, weight)`` parts (default weight 1)."""
    parts = []
    for part in _AND.split(prompt):
        match = _PART_WEIGHT.match(part)  # always matches: the text group can take everything
        text, weight = match.group(1), match.group(2)
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts


# --------------------------------------------------------------------------------------------------
# Prompt schedule tree: "[from:to:when]", "[to:when]", "[from::when]" and "[a|b|...]"
#
# A parsed prompt is a tuple of items; an item is literal text or one of the two nodes below.
# Emphasis groups "(x)", "(x:w)" and "[x]" are flattened into text items (brackets included), so
# only scheduling decisions remain as nodes.


@dataclass(frozen=True)
class _Scheduled:
    before: tuple
    after: tuple
    number: str  # the NUMBER text: whether it contains "." decides fraction vs. absolute step

    def parts(self) -> tuple:
        return self.before, self.after


@dataclass(frozen=True)
class _Alternate:
    options: tuple

    def parts(self) -> tuple:
        return self.options


_Item = str | _Scheduled | _Alternate

# Runs of plain text (backslash escapes included), single syntax characters, or a backslash that
# escapes nothing. Without re.S, "\\." does not take a line break, like the grammar's "\\." .
_TOKEN = re.compile(r"(?:[^\\\[\]():|]|\\.)+|[\[\]():|]|\\")
_SYNTAX = frozenset("[]():|")
# lark's SIGNED_NUMBER (ASCII digits, optional exponent) with optional whitespace around it.
_WHEN = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*")


class _ParseFailed(Exception):
    """The prompt cannot be derived from the grammar; it is then used literally."""


@dataclass
class _Frame:
    """An open "(" or "[" whose contents are being collected, split into parts at ":" or "|"."""

    opener: str
    token_index: int
    number_from: int  # text offset where the current part starts (the NUMBER of "[…:when]")
    parts: list[list[_Item]] = field(default_factory=lambda: [[]])
    separator: str = ""  # ":" or "|" once one is seen; an element never mixes them

    def accepts(self, separator: str) -> bool:
        if self.opener == "(":  # "(text)" or "(text:weight)"
            return separator == ":" and len(self.parts) == 1
        if self.separator and separator != self.separator:
            return False
        return separator == "|" or len(self.parts) < 3  # any number of "|", at most [from:to:when]


class _ScheduleParser:
    """Left-to-right parse with an explicit stack (no recursion, so nesting depth is unlimited).

    Inside brackets the grammar is deterministic; the only choice is at the top level, where any
    "[ ] ( ) :" may also be a stray character. We prefer structure: an opener starts an element
    unless that element is known to fail. (Where both readings parse, e.g. "[a:b:2]:", A1111's
    lark parser picks one by hash order, so its result changes with PYTHONHASHSEED; structure is
    what it picks for every unambiguous prompt and for the documented examples.) When the innermost open element fails, every enclosing
    one fails with it (their content cannot hold a broken element), so all of them are remembered
    as failed and parsing resumes at the outermost one, which then reads as a stray character.
    Each failure rescans only text it had passed, once, which keeps the parse linear.
    """

    def __init__(self, prompt: str):
        self.prompt = prompt
        self.tokens = [(m.group(), m.start()) for m in _TOKEN.finditer(prompt)]
        self.failed: set[int] = set()
        self.top: list[_Item] = []
        self.stack: list[_Frame] = []

    def parse(self) -> tuple:
        index = 0
        while index < len(self.tokens) or self.stack:
            if index == len(self.tokens):  # unclosed brackets at the end
                index = self._fail()
                continue
            token, position = self.tokens[index]
            if token == "\\" or (token == "|" and not self.stack):
                raise _ParseFailed  # nothing in the grammar can take these characters here
            if token in ("(", "[") and index not in self.failed:
                self.stack.append(_Frame(token, index, position + 1))
            elif not self.stack:
                self.top.append(token)  # plain text, or a stray bracket / colon
            elif not self._feed(token, position):
                index = self._fail()
                continue
            index += 1
        return tuple(self.top)

    def _fail(self) -> int:
        self.failed.update(frame.token_index for frame in self.stack)
        restart = self.stack[0].token_index
        self.stack.clear()
        return restart

    def _feed(self, token: str, position: int) -> bool:
        """Give a token to the innermost open element; False when that element cannot be valid."""
        frame = self.stack[-1]
        if token not in _SYNTAX:
            frame.parts[-1].append(token)
            return True
        if token in ("(", "["):  # an element already known to fail
            return False
        if token in (":", "|"):
            if not frame.accepts(token):
                return False
            frame.separator = token
            frame.parts.append([])
            frame.number_from = position + 1
            return True
        closes = "(" if token == ")" else "["
        if frame.opener != closes:
            return False
        items = self._close(frame, position)
        if items is None:
            return False
        self.stack.pop()
        (self.stack[-1].parts[-1] if self.stack else self.top).extend(items)
        return True

    def _close(self, frame: _Frame, position: int) -> list[_Item] | None:
        """The items an element becomes once closed at ``position``; None if it is not valid."""
        if frame.opener == "(" or not frame.separator:  # emphasis: kept verbatim
            closer = ")" if frame.opener == "(" else "]"
            items: list[_Item] = [frame.opener, *frame.parts[0]]
            if frame.separator:
                items += [":", *frame.parts[1]]
            return items + [closer]
        if frame.separator == "|":
            return [_Alternate(tuple(tuple(option) for option in frame.parts))]
        when = _WHEN.fullmatch(self.prompt, frame.number_from, position)
        if when is None:
            return None
        before = tuple(frame.parts[0]) if len(frame.parts) == 3 else ()
        return [_Scheduled(before, tuple(frame.parts[-2]), when.group(1))]


def _parse_schedule_tree(prompt: str) -> tuple | None:
    try:
        return _ScheduleParser(prompt).parse()
    except _ParseFailed:
        return None


def _nodes(items: tuple) -> Iterator[_Scheduled | _Alternate]:
    """Every node of a parsed prompt, at any depth (iteratively, to allow any nesting)."""
    pending = [iter(items)]
    while pending:
        for item in pending[-1]:
            if not isinstance(item, str):
                yield item
                pending.extend(iter(part) for part in item.parts())
                break
        else:
            pending.pop()


# --------------------------------------------------------------------------------------------------
# Turning the tree into a schedule


@dataclass(frozen=True)
class _Timeline:
    """How a "when" number maps to a step of this pass (§5.2)."""

    steps: int
    int_offset: int = 0
    float_offset: float = 0.0
    old: bool = False

    def when(self, number: str) -> int:
        value = float(number)
        if self.old:  # before 1.6: below 1 is a fraction of the steps, else a step number
            value = value * self.steps if value < 1 else value
        elif "." in number:
            value = (value - self.float_offset) * self.steps
        else:
            value = value - self.int_offset
        # min(steps, int(value)), without int() overflowing on "1e999"; anything below 1 never
        # switches, so very negative values can all be -1.
        if value >= self.steps:
            return self.steps
        return -1 if value <= -1 else int(value)

    def pick(self, node: _Scheduled | _Alternate, step: int) -> tuple:
        if isinstance(node, _Alternate):
            return node.options[(step - 1) % len(node.options)]
        return node.before if step <= self.when(node.number) else node.after


def _switch_points(tree: tuple, timeline: _Timeline) -> list[int]:
    points = {timeline.steps}
    for node in _nodes(tree):
        if isinstance(node, _Alternate):
            points.update(range(1, timeline.steps + 1))
        else:
            when = timeline.when(node.number)
            if when >= 1:
                points.add(when)
    return sorted(points)


def _render(tree: tuple, step: int, timeline: _Timeline) -> str:
    out: list[str] = []
    pending = [iter(tree)]
    while pending:
        for item in pending[-1]:
            if isinstance(item, str):
                out.append(item)
            else:
                pending.append(iter(timeline.pick(item, step)))
                break
        else:
            pending.pop()
    return "".join(out)


def _schedule(prompt: str, timeline: _Timeline) -> Schedule:
    tree = _parse_schedule_tree(prompt)
    if tree is None:
        return [(timeline.steps, prompt)]
    return [(step, _render(tree, step, timeline)) for step in _switch_points(tree, timeline)]


def get_learned_conditioning_prompt_schedules(prompts: list[str], base_steps: int,
                                              hires_steps: int | None = None,
                                              use_old_scheduling: bool = False) -> list[Schedule]:
    """For each prompt, its ``(end_at_step, text)`` list for the base pass, or for the hires pass
    when ``hires_steps`` is given (integers then count from the start of the first pass and
    fractions from 1.0 upward, so ``[a:b:1.5]`` switches halfway through the hires pass).

    With ``use_old_scheduling`` (A1111 "Old prompt editing timelines") both passes are scheduled
    on ``base_steps``, as A1111 does.
    """
    if hires_steps is None or use_old_scheduling:
        timeline = _Timeline(base_steps, old=use_old_scheduling)
    else:
        timeline = _Timeline(hires_steps, int_offset=base_steps, float_offset=1.0)
    done: dict[str, Schedule] = {}
    for prompt in prompts:
        if prompt not in done:
            done[prompt] = _schedule(prompt, timeline)
    return [list(done[prompt]) for prompt in prompts]


def schedule_at(schedule: Schedule, step: int) -> str:
    """The text for the denoiser call with 0-based index ``step``: the first entry with
    ``step <= end_at_step``. Past the last entry A1111 falls back to the *first* entry; so do we."""
    for end_at_step, text in schedule:
        if step <= end_at_step:
            return text
    return schedule[0][1]


def parse_multicond(prompts: list[str], steps: int, hires_steps: int | None = None,
                    use_old_scheduling: bool = False) -> list[MulticondPrompt]:
    """Per prompt, per ``AND`` part: ``(schedule, weight)``."""
    split = [split_and(prompt) for prompt in prompts]
    texts = [text for parts in split for text, _ in parts]
    schedules = iter(get_learned_conditioning_prompt_schedules(texts, steps, hires_steps, use_old_scheduling))
    return [[(next(schedules), weight) for _, weight in parts] for parts in split]


def unique_texts(batch: list[MulticondPrompt]) -> list[str]:
    """Each distinct text any schedule of the batch uses, in first-use order: what to encode once."""
    seen: dict[str, None] = {}
    for parts in batch:
        for schedule, _ in parts:
            for _, text in schedule:
                seen.setdefault(text, None)
    return list(seen)
