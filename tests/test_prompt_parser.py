"""Prompt text processing (spec §5.1, §5.2, §5.6 and the "Comments" script of §1.2).

Expected values are A1111's documented examples and behaviour observed from A1111's own parser,
not outputs of our implementation.
"""

import random
import time

import pytest

from modules.core.conditioning.prompt_parser import (
    ExtraNetworkCall,
    extract_extra_networks,
    get_learned_conditioning_prompt_schedules,
    parse_multicond,
    schedule_at,
    split_and,
    strip_comments,
    unique_texts,
)


def g(prompt, steps=10, hires_steps=None, old=False):
    """One prompt's schedule as A1111 prints it (lists, not tuples)."""
    schedule = get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps, old)[0]
    return [list(entry) for entry in schedule]


def alternating(first, second, steps=10):
    return [[step, first if step % 2 else second] for step in range(1, steps + 1)]


# ---------------------------------------------------------------------------------------------
# Scheduling: A1111's documented examples (its prompt_parser doctests), 10 steps

DOCUMENTED = [
    ("test", [[10, "test"]]),
    ("a [b:3]", [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [[5, "a  c"], [10, "a b c"]]),
    ("((a][:b:c [d:3]", [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", alternating("a", "(b:1.1)")),
    ("[fe|]male", alternating("female", "male")),
    ("[fe|||]male", [[s, "female" if s % 4 == 1 else "male"] for s in range(1, 11)]),
]


@pytest.mark.parametrize("prompt,expected", DOCUMENTED)
def test_documented_examples(prompt, expected):
    assert g(prompt) == expected


def test_documented_fe_pipes_spelled_out():
    assert g("[fe|||]male") == [[1, "female"], [2, "male"], [3, "male"], [4, "male"], [5, "female"],
                                [6, "male"], [7, "male"], [8, "male"], [9, "female"], [10, "male"]]


def test_bar_outside_alternation_makes_the_prompt_literal():
    # A1111's doctest lists "a [{b|d{:.5] c" → [[5, 'a  c'], [10, 'a {b|d{ c']] under the comment
    # "not handling this right now": its own parser (lark 1.1.2, and 1.1.9) fails on the "|" that is
    # not inside an alternation and uses the prompt literally. §5.2's grammar agrees ("plain"
    # excludes "|"), so we match what A1111 actually does, not the aspirational doctest.
    assert g("a [{b|d{:.5] c") == [[10, "a [{b|d{:.5] c"]]
    assert g("a|b [c:3]") == [[10, "a|b [c:3]"]]
    assert g("[a|b:3]") == [[10, "[a|b:3]"]]


def test_spec_example():
    assert g("a [b:c:0.5] d") == [[5, "a b d"], [10, "a c d"]]


def test_hires_pass_documented_examples():
    assert g("a [b:.5] c", 10, 10) == [[10, "a b c"]]
    assert g("a [b:1.5] c", 10, 10) == [[5, "a  c"], [10, "a b c"]]


def test_hires_pass_integers_count_from_the_first_pass():
    assert g("a [b:15] c", 10, 10) == [[5, "a  c"], [10, "a b c"]]
    assert g("a [b:5] c", 10, 10) == [[10, "a b c"]]  # switched during the first pass already
    assert g("a [b:c:12] d", 10, 20) == [[2, "a b d"], [20, "a c d"]]
    assert g("[a|b]", 4, 6) == alternating("a", "b", 6)


def test_old_timelines():
    assert g("a [b:c:0.3] d", 20, old=True) == [[6, "a b d"], [20, "a c d"]]
    assert g("a [b:c:3] d", 20, old=True) == [[3, "a b d"], [20, "a c d"]]
    assert g("a [b:c:1.5] d", 20, old=True) == [[1, "a b d"], [20, "a c d"]]  # ≥1: a step, truncated


def test_old_timelines_schedule_the_hires_pass_on_base_steps():
    # As in A1111: with old timelines the offsets and hires steps are not used at all.
    assert g("a [b:c:0.5] d", 20, 10, old=True) == [[10, "a b d"], [20, "a c d"]]
    assert g("a [b:c:1.5] d", 20, 10, old=True) == [[1, "a b d"], [20, "a c d"]]


@pytest.mark.parametrize("prompt,expected", [
    ("[a:b:0]", [[10, "b"]]),            # below 1: never a switch point, always "to"
    ("[a:b:-1]", [[10, "b"]]),
    ("[a: -3 ]", [[10, "a"]]),           # [to:when] with when < 1: "to" throughout
    ("[a:b:0.05]", [[10, "b"]]),         # int(0.5) == 0
    ("[a:b:+2]", [[2, "a"], [10, "b"]]),
    ("[a:1e0]", [[1, ""], [10, "a"]]),   # no "." → absolute step 1
    ("[a:b:1e1]", [[10, "a"]]),
    ("[a:b:1.]", [[10, "a"]]),           # "." → fraction: 1.0 of 10 steps
    ("[a:b:2.0]", [[10, "a"]]),          # 2.0 of the steps, clamped to 10
    ("[a:b:1.2e1]", [[10, "a"]]),
    ("[a:11]", [[10, ""]]),              # clamped to the step count
    ("[a:b:\n2\n]", [[2, "a"], [10, "b"]]),
    ("[a:b:1e999]", [[10, "a"]]),        # A1111 raises OverflowError here; clamping is the intent
    ("[a:b:-1e999]", [[10, "b"]]),
])
def test_when_numbers(prompt, expected):
    assert g(prompt) == expected


@pytest.mark.parametrize("prompt,expected", [
    ("[:3]", [[3, ""], [10, ""]]),
    ("[::3]", [[3, ""], [10, ""]]),
    ("[|]", [[s, ""] for s in range(1, 11)]),
    ("[a||b]", [[s, ["a", "", "b"][(s - 1) % 3]] for s in range(1, 11)]),
    ("[[a|b]:2]", [[1, ""], [2, ""]] + alternating("a", "b")[2:]),
    ("([a|b]", alternating("(a", "(b")),
    ("[a:[b:c:5]:2]", [[2, "a"], [5, "b"], [10, "c"]]),
    ("[[a:b:8]:c:3]", [[3, "a"], [8, "c"], [10, "c"]]),  # consecutive equal texts are kept
    ("(a [b:c:2] d:1.2)", [[2, "(a b d:1.2)"], [10, "(a c d:1.2)"]]),
    ("[a\\:b:3]", [[3, ""], [10, "a\\:b"]]),           # escapes stay for the emphasis parser
    ("[a:b\\]:3]", [[3, "a"], [10, "b\\]"]]),
    ("\\[a:3]", [[10, "\\[a:3]"]]),
])
def test_nesting_empties_and_escapes(prompt, expected):
    assert g(prompt) == expected


@pytest.mark.parametrize("prompt", [
    "[a:b:2:3]",   # too many colons
    "[a:b:x]",     # not a number
    "[a:b:٢]",     # NUMBER is ASCII digits only
    "[]",
    "(a:b:c)",
    "a\\",         # a backslash must escape something
    "a\\\nb [c:2]",  # ... and not a line break
])
def test_unparsable_or_unscheduled_prompts_are_used_literally(prompt):
    assert g(prompt) == [[10, prompt]]


def test_identical_prompts_share_one_parse_but_not_one_list():
    first, second = get_learned_conditioning_prompt_schedules(["a [b:2]", "a [b:2]"], 10)
    assert first == second == [(2, "a "), (10, "a b")]
    assert first is not second


# ---------------------------------------------------------------------------------------------
# Robustness


FUZZ_ALPHABET = "ab [](): |\\.0123456789-"


@pytest.mark.parametrize("hires_steps", [None, 7])
def test_fuzz_never_raises_and_ends_at_steps(hires_steps):
    rng = random.Random(1234)
    steps = hires_steps or 10
    for _ in range(3000):
        prompt = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(0, 40)))
        schedule = get_learned_conditioning_prompt_schedules([prompt], 10, hires_steps)[0]
        ends = [end for end, _ in schedule]
        assert ends and ends[-1] == steps, prompt
        assert all(1 <= a < b for a, b in zip(ends, ends[1:])), prompt
        assert all(isinstance(text, str) for _, text in schedule)
        if "[" not in prompt:  # only square brackets schedule anything
            assert schedule == [(steps, prompt)]


def test_long_prompt_parses_fast():
    pieces = ["(masterpiece:1.2), ", "[cat|dog] ", "[red:blue:0.5] ", "[[a:b:3] ", "((x)] ", "[c:d:e] ",
              "(y:[z:2]) ", "\\[lit\\] ", "[[[deep]]:4] "]
    rng = random.Random(7)
    prompt = ""
    while len(prompt) < 5000:
        prompt += rng.choice(pieces)
    start = time.perf_counter()
    schedule = get_learned_conditioning_prompt_schedules([prompt], 20)[0]
    elapsed = time.perf_counter() - start
    assert [end for end, _ in schedule] == list(range(1, 21))
    assert elapsed < 0.1, elapsed


@pytest.mark.parametrize("prompt", [
    "(" * 5000 + "a",
    "[" * 5000 + "a",
    "[a:" * 1700,
    "([" * 2500,
    "[" * 3000 + "a" + "]" * 3000,
    "[" * 2000 + "a" + ":1]" * 2000,
    "[" * 2000 + "a" + "|b]" * 2000,
])
def test_deep_or_unbalanced_nesting_needs_no_recursion(prompt):
    start = time.perf_counter()
    schedule = get_learned_conditioning_prompt_schedules([prompt], 10)[0]
    assert schedule[-1][0] == 10
    assert time.perf_counter() - start < 1.0


def test_deep_valid_nesting_is_scheduled():
    prompt = "[" * 2000 + "a" + ":1]" * 2000
    assert g(prompt) == [[1, ""], [10, "a"]]


# ---------------------------------------------------------------------------------------------
# Using a schedule during sampling


def test_schedule_at_uses_zero_based_denoiser_steps():
    schedule = [(3, "a"), (10, "b")]
    # Calls 0..3 use the entry ending at step 3: A1111 gives "a" to four calls, not three.
    assert [schedule_at(schedule, step) for step in range(10)] == ["a"] * 4 + ["b"] * 6
    assert schedule_at(schedule, 10) == "b"


def test_schedule_at_past_the_end_falls_back_to_the_first_entry():
    assert schedule_at([(3, "a"), (10, "b")], 11) == "a"  # as A1111's reconstruct_cond_batch


def test_schedule_at_with_alternation_repeats_the_first_option_once():
    schedule = get_learned_conditioning_prompt_schedules(["[x|y]"], 4)[0]
    assert [schedule_at(schedule, step) for step in range(4)] == ["x", "x", "y", "x"]


# ---------------------------------------------------------------------------------------------
# AND


def test_split_and_with_weights():
    assert split_and("a AND b:0.5 AND c :-1.2") == [("a", 1.0), (" b", 0.5), (" c", -1.2)]


@pytest.mark.parametrize("prompt,expected", [
    ("ANDROID", [("ANDROID", 1.0)]),
    ("sandAND a_AND_b", [("sandAND a_AND_b", 1.0)]),
    ("a and b", [("a and b", 1.0)]),
    ("a AND", [("a", 1.0), ("", 1.0)]),
    ("a:1.5", [("a", 1.5)]),
    ("a : 2. ", [("a", 2.0)]),
    ("a:.5", [("a", 0.5)]),
    ("x:+3", [("x", 3.0)]),
    ("a:.", [("a:.", 1.0)]),
    ("[a:b:0.5]", [("[a:b:0.5]", 1.0)]),
    ("a\nb AND c", [("a\nb", 1.0), (" c", 1.0)]),
    ("", [("", 1.0)]),
])
def test_split_and_cases(prompt, expected):
    assert split_and(prompt) == expected


def test_parse_multicond_and_unique_texts():
    batch = parse_multicond(["a [b:c:2] AND d:0.5", "d", "a [b:c:2]"], 10)
    assert batch == [
        [([(2, "a b"), (10, "a c")], 1.0), ([(10, " d")], 0.5)],
        [([(10, "d")], 1.0)],
        [([(2, "a b"), (10, "a c")], 1.0)],
    ]
    assert unique_texts(batch) == ["a b", "a c", " d", "d"]


def test_parse_multicond_hires():
    assert parse_multicond(["[a:b:1.5] AND c"], 10, hires_steps=4) == [
        [([(2, "a"), (4, "b")], 1.0), ([(4, " c")], 1.0)]]


# ---------------------------------------------------------------------------------------------
# Comments


@pytest.mark.parametrize("text,expected", [
    ("no comment", "no comment"),
    ("a\n# note\nb", "a\nb"),          # a whole comment line disappears
    ("# note\nb", "\nb"),              # ... but at the start its line break stays
    ("a\n# note", "a\n"),
    ("a # note\nb", "a \nb"),          # the rest of the line goes, the line break stays
    ("a # note", "a \n"),              # ... and one is added at the end of the text
    ("a\n#1\n#2\nb", "a\n\nb"),        # the second of two comment lines leaves a blank line
    ("#only", "\n"),
    ("a, (b:1.2) # c [d:2]\ne", "a, (b:1.2) \ne"),
])
def test_strip_comments(text, expected):
    assert strip_comments(text) == expected


# ---------------------------------------------------------------------------------------------
# Extra networks


def test_lora_positional():
    text, calls = extract_extra_networks("a <lora:name:0.8>, b")
    assert text == "a , b"
    assert calls == [ExtraNetworkCall("lora", ["name", "0.8"], {}, ["name", "0.8"])]


def test_lora_named():
    text, calls = extract_extra_networks("<lora:name:te=0.5:unet=1>cat")
    assert text == "cat"
    assert calls[0].kind == "lora"
    assert calls[0].positional == ["name"]
    assert calls[0].named == {"te": "0.5", "unet": "1"}
    assert calls[0].items == ["name", "te=0.5", "unet=1"]


def test_hypernet_and_unknown_kinds_are_removed_too():
    text, calls = extract_extra_networks("x <hypernet:x>y <whatever:foo:bar> z")
    assert text == "x y  z"
    assert [(c.kind, c.positional) for c in calls] == [("hypernet", ["x"]), ("whatever", ["foo", "bar"])]


def test_extra_network_details():
    text, calls = extract_extra_networks("<lora:a=b=c> <lora:b: 0.5><lyco:c:1>")
    assert text == " "
    assert calls[0].positional == ["a=b=c"] and calls[0].named == {}  # two "=": not a named arg
    assert calls[1].positional == ["b", " 0.5"]                      # no trimming
    assert calls[2].kind == "lyco"


@pytest.mark.parametrize("text", ["<lora:>", "<lora name:1>", "<:x>", "a < b > c", "<lora:x"])
def test_text_that_is_not_a_tag_stays(text):
    assert extract_extra_networks(text) == (text, [])
