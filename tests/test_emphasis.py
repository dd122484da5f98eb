"""Emphasis parsing (spec §5.3; A1111 ``prompt_parser.parse_prompt_attention``).

Written from the spec and A1111's documented examples, not from our implementation.
"""

import pytest

from modules.core.conditioning.emphasis import parse_prompt_attention

UP = 1.1
DOWN = 1 / 1.1


def parsed(text):
    return [(text, weight) for text, weight in parse_prompt_attention(text)]


def assert_parsed(text, expected):
    """Texts exactly, weights to 1e-12 (where A1111 does not document the float noise)."""
    got = parsed(text)
    assert [t for t, _ in got] == [t for t, _ in expected], got
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], rel=1e-12, abs=1e-15), got


# A1111's own docstring examples; the weights are asserted exactly (the float noise is part of the
# documented output and decides whether neighbouring segments merge).
DOCUMENTED = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


@pytest.mark.parametrize("text,expected", DOCUMENTED, ids=[t for t, _ in DOCUMENTED])
def test_a1111_documented_examples_exactly(text, expected):
    assert parsed(text) == expected


def test_empty_prompt():
    assert parsed("") == [("", 1.0)]


def test_returns_plain_floats_and_strings():
    for text, weight in parse_prompt_attention("a (b:1.5) [c]"):
        assert isinstance(text, str)
        assert isinstance(weight, float)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("(a)", [("a", UP)]),
        ("[a]", [("a", DOWN)]),
        ("(a:1.5)", [("a", 1.5)]),
        ("(a: 1.5 )", [("a", 1.5)]),
        ("(a:.5)", [("a", 0.5)]),
        ("(a:-1)", [("a", -1.0)]),
        ("(a:+2)", [("a", 2.0)]),
        ("x (a:0) y", [("x ", 1.0), ("a", 0.0), (" y", 1.0)]),
    ],
)
def test_single_brackets(text, expected):
    assert_parsed(text, expected)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("((a))", [("a", UP * UP)]),
        ("[[a]]", [("a", DOWN * DOWN)]),
        ("((a:2))", [("a", 2.2)]),
        ("[(a:2)]", [("a", 2 / 1.1)]),
        ("(a (b:2) c)", [("a ", 1.1), ("b", 2.2), (" c", 1.1)]),
        ("(a [b] c)", [("a ", 1.1), ("b", 1.0), (" c", 1.1)]),
        ("((a:1.5) b:0.5)", [("a", 0.75), (" b", 0.5)]),
    ],
)
def test_nesting_multiplies(text, expected):
    assert_parsed(text, expected)


def test_nested_weights_use_sequential_multiplication():
    # A1111 multiplies each segment's weight in place as each bracket closes: 1.0·1.1·1.1, not 1.1**2
    # rounded differently. Exact values matter because merging compares weights with ==.
    assert parsed("((a))") == [("a", 1.0 * 1.1 * 1.1)]
    assert parsed("[[a]]") == [("a", 1.0 * (1 / 1.1) * (1 / 1.1))]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("a (b", [("a ", 1.0), ("b", UP)]),
        ("a [b", [("a ", 1.0), ("b", DOWN)]),
        ("((a) b", [("a", UP * UP), (" b", UP)]),
        ("(a [b", [("a ", UP), ("b", UP * DOWN)]),
        ("(a:1.5", [("a:1.5", UP)]),  # no closing ")", so ":1.5" is text
    ],
)
def test_unbalanced_openers_apply_to_the_end(text, expected):
    assert_parsed(text, expected)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("a) b]", [("a) b]", 1.0)]),
        ("(a))", [("a", UP), (")", 1.0)]),
        ("[a]]", [("a", DOWN), ("]", 1.0)]),
        ("a:1.5) b", [("a:1.5) b", 1.0)]),  # ":1.5)" without an open "(" is literal
    ],
)
def test_stray_closers_are_literal(text, expected):
    assert_parsed(text, expected)


def test_weight_syntax_needs_a_round_bracket():
    # "[text:1.5]" is not a weight (spec §5.3): the square bracket divides and ":1.5" stays text.
    assert_parsed("[a:1.5]", [("a:1.5", DOWN)])


def test_plain_colons_are_literal():
    assert parsed("time: 12:30, a:b") == [("time: 12:30, a:b", 1.0)]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("\\(a\\)", [("(a)", 1.0)]),
        ("\\[a\\]", [("[a]", 1.0)]),
        ("a \\\\ b", [("a \\ b", 1.0)]),
        ("\\\\(a)", [("\\", 1.0), ("a", UP)]),  # escaped backslash, then a real bracket
        ("(\\(a\\))", [("(a)", UP)]),  # escaped brackets inside a real group get its weight
        ("\\((a:1.5)\\)", [("(", 1.0), ("a", 1.5), (")", 1.0)]),
    ],
)
def test_escapes(text, expected):
    assert_parsed(text, expected)


def test_adjacent_equal_weights_merge():
    assert parsed("(a)(b)") == [("ab", 1.1)]
    assert parsed("a(b:1)c") == [("abc", 1.0)]
    assert parsed("(a)(b:1.1)") == [("ab", 1.1)]
    # different weights stay apart
    assert parsed("(a)((b))") == [("a", 1.1), ("b", 1.1 * 1.1)]


def test_break_becomes_a_marker():
    assert parsed("a BREAK b") == [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]
    assert parsed("a\nBREAK\n  b") == [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]
    assert parsed("a BREAK b BREAK c") == [
        ("a", 1.0), ("BREAK", -1.0), ("b", 1.0), ("BREAK", -1.0), ("c", 1.0)
    ]


def test_break_marker_inside_weighted_text():
    got = parsed("(a:1.5) b BREAK c")
    assert got == [("a", 1.5), (" b", 1.0), ("BREAK", -1.0), ("c", 1.0)]


@pytest.mark.parametrize("text", ["a break b", "a BREAKFAST b", "aBREAK b", "a Break b"])
def test_break_must_be_uppercase_and_word_bounded(text):
    assert parsed(text) == [(text, 1.0)]
