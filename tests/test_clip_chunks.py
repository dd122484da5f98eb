"""Tokenization, 75-token chunking, emphasis application and CLIP skip (spec §5.3–§5.5).

Expectations come from the spec (and A1111's ``sd_hijack_clip.py`` layout it describes). Encoder
outputs are compared with the tiny random CLIP text model called directly through transformers.
"""

import pytest
import torch

from modules.core.conditioning.clip_text import ClipTextConditioner, TextOptions, apply_emphasis
from tests.fixtures.clip import clip_tokenizer, random_clip_text_model

BOS, EOS = 49406, 49407
COMMA, A, PHOTO, OF, CAT = 267, 320, 1125, 539, 2368
DOWN = 1 / 1.1


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer()


@pytest.fixture(scope="module")
def encoder():
    return random_clip_text_model(hidden_size=64, seed=1234)


def conditioner(tokenizer, encoder=None, **options):
    return ClipTextConditioner(tokenizer, encoder, TextOptions(**options))


def layout(chunk):
    return list(chunk.tokens), [float(m) for m in chunk.multipliers]


def words(n, word="cat"):
    # "cat cat cat ..." is one CLIP token (2368) per word
    return " ".join([word] * n)


def run_model(encoder, token_rows):
    with torch.no_grad():
        return encoder(input_ids=torch.tensor(token_rows), output_hidden_states=True)


# ---------------------------------------------------------------- tokenization and chunk layout


def test_tokenizer_ids_used_by_these_tests(tokenizer):
    ids = tokenizer(["a photo of a cat", words(3), "a, b"], add_special_tokens=False)["input_ids"]
    assert ids[0] == [A, PHOTO, OF, A, CAT]
    assert ids[1] == [CAT, CAT, CAT]
    assert ids[2][1] == COMMA


def test_short_prompt_layout(tokenizer):
    chunks, count = conditioner(tokenizer).tokenize_line("a photo of a cat")
    assert count == 5
    assert len(chunks) == 1
    tokens, mults = layout(chunks[0])
    assert tokens == [BOS, A, PHOTO, OF, A, CAT] + [EOS] * 71
    assert mults == [1.0] * 77


def test_empty_prompt_is_bos_and_76_eos(tokenizer):
    chunks, count = conditioner(tokenizer).tokenize_line("")
    assert count == 0
    assert len(chunks) == 1
    assert layout(chunks[0]) == ([BOS] + [EOS] * 76, [1.0] * 77)


def test_exactly_75_tokens_is_one_chunk(tokenizer):
    chunks, count = conditioner(tokenizer).tokenize_line(words(75))
    assert count == 75
    assert len(chunks) == 1
    assert layout(chunks[0])[0] == [BOS] + [CAT] * 75 + [EOS]


def test_76_tokens_spill_into_a_second_chunk(tokenizer):
    chunks, count = conditioner(tokenizer).tokenize_line(words(76))
    assert count == 76
    assert [layout(c)[0] for c in chunks] == [
        [BOS] + [CAT] * 75 + [EOS],
        [BOS] + [CAT] + [EOS] * 75,
    ]
    assert all(layout(c)[1] == [1.0] * 77 for c in chunks)


@pytest.mark.parametrize("n,chunk_count", [(150, 2), (151, 3), (225, 3)])
def test_chunk_count(tokenizer, n, chunk_count):
    chunks, count = conditioner(tokenizer).tokenize_line(words(n))
    assert count == n
    assert len(chunks) == chunk_count
    assert all(len(c.tokens) == 77 and len(c.multipliers) == 77 for c in chunks)
    assert all(c.tokens[0] == BOS and c.tokens[-1] == EOS for c in chunks)
    assert sum(t == CAT for c in chunks for t in c.tokens) == n


@pytest.mark.parametrize(
    "n,shown",
    [(0, (0, 75)), (1, (1, 75)), (75, (75, 75)), (76, (76, 150)), (150, (150, 150)), (151, (151, 225))],
)
def test_token_counter(tokenizer, n, shown):
    assert tuple(conditioner(tokenizer).token_count(words(n) if n else "")) == shown


def test_weights_attach_to_their_tokens(tokenizer):
    chunks, _ = conditioner(tokenizer).tokenize_line("a (photo:1.5) of [cat]")
    tokens, mults = layout(chunks[0])
    assert tokens[:7] == [BOS, A, PHOTO, OF, CAT, EOS, EOS]
    assert mults[:6] == pytest.approx([1.0, 1.0, 1.5, 1.0, DOWN, 1.0])
    assert mults[6:] == [1.0] * 71  # EOS padding carries weight 1.0


def test_weights_follow_tokens_across_a_chunk_boundary(tokenizer):
    chunks, _ = conditioner(tokenizer).tokenize_line(words(74) + " (cat cat:1.3) cat")
    assert len(chunks) == 2
    t0, m0 = layout(chunks[0])
    t1, m1 = layout(chunks[1])
    assert m0[74:] == pytest.approx([1.0, 1.3, 1.0])  # position 75 is the first weighted cat
    assert t1[:4] == [BOS, CAT, CAT, EOS]
    assert m1[:4] == pytest.approx([1.0, 1.3, 1.0, 1.0])


def test_emphasis_none_keeps_brackets_as_text(tokenizer):
    text = "a (photo:1.5) of [cat]"
    literal = tokenizer([text], add_special_tokens=False)["input_ids"][0]
    chunks, count = conditioner(tokenizer, emphasis="None").tokenize_line(text)
    tokens, mults = layout(chunks[0])
    assert count == len(literal)
    assert tokens[1:1 + len(literal)] == literal
    assert mults == [1.0] * 77


def test_break_forces_a_new_chunk(tokenizer):
    chunks, _ = conditioner(tokenizer).tokenize_line("a BREAK cat")
    assert [layout(c) for c in chunks] == [
        ([BOS, A] + [EOS] * 75, [1.0] * 77),
        ([BOS, CAT] + [EOS] * 75, [1.0] * 77),
    ]


def test_break_counts_the_closed_chunk_as_full(tokenizer):
    # A1111 (sd_hijack_clip.next_chunk): every chunk but the last adds 75 to the count, so the counter
    # reads "76/150" for "a BREAK cat" (spec §5.4 counter: ceil(max(n,1)/75)·75 of that count).
    conditioner_ = conditioner(tokenizer)
    assert conditioner_.tokenize_line("a BREAK cat")[1] == 76
    assert tuple(conditioner_.token_count("a BREAK cat")) == (76, 150)


def test_lowercase_break_is_a_word(tokenizer):
    chunks, _ = conditioner(tokenizer).tokenize_line("a break cat")
    assert len(chunks) == 1


# ---------------------------------------------------------------- comma backtrack


def comma_prompt(before, after):
    """``before`` cats, a comma, then ``after`` cats (one token each)."""
    return words(before) + ", " + words(after)


def test_comma_backtrack_moves_the_words_after_the_comma(tokenizer):
    # 60 cats, "," at index 60, 20 cats: 81 tokens. When the 76th token arrives the comma is 15 tokens
    # from the end of the full chunk (≤ 20), so the 14 cats after it move to the next chunk.
    chunks, count = conditioner(tokenizer).tokenize_line(comma_prompt(60, 20))
    assert [layout(c)[0] for c in chunks] == [
        [BOS] + [CAT] * 60 + [COMMA] + [EOS] * 15,
        [BOS] + [CAT] * 20 + [EOS] * 56,
    ]
    assert all(layout(c)[1] == [1.0] * 77 for c in chunks)
    assert count == 95  # the first chunk counts as 75


def test_comma_backtrack_keeps_the_weights_of_moved_tokens(tokenizer):
    text = words(60) + ", " + words(10) + " (cat cat cat cat cat cat cat cat cat cat:1.3)"
    chunks, _ = conditioner(tokenizer).tokenize_line(text)
    t1, m1 = layout(chunks[1])
    assert t1[:21] == [BOS] + [CAT] * 20
    assert m1[:21] == pytest.approx([1.0] + [1.0] * 10 + [1.3] * 10)
    assert layout(chunks[0])[1] == [1.0] * 77


def test_comma_backtrack_disabled_with_zero(tokenizer):
    chunks, count = conditioner(tokenizer, comma_padding_backtrack=0).tokenize_line(comma_prompt(60, 20))
    assert [layout(c)[0] for c in chunks] == [
        [BOS] + [CAT] * 60 + [COMMA] + [CAT] * 14 + [EOS],
        [BOS] + [CAT] * 6 + [EOS] * 70,
    ]
    assert count == 81


@pytest.mark.parametrize("before,moves", [(55, True), (54, False), (74, True), (30, False)])
def test_comma_backtrack_window_is_the_last_20_tokens(tokenizer, before, moves):
    # comma at chunk index `before`; it is within the last 20 positions (55..74) or not
    chunks, _ = conditioner(tokenizer).tokenize_line(comma_prompt(before, 80 - before))
    first = layout(chunks[0])[0]
    if moves:
        assert first == [BOS] + [CAT] * before + [COMMA] + [EOS] * (75 - before)
    else:
        assert first == [BOS] + [CAT] * before + [COMMA] + [CAT] * (74 - before) + [EOS]


def test_comma_backtrack_setting_changes_the_window(tokenizer):
    near = conditioner(tokenizer, comma_padding_backtrack=5).tokenize_line(comma_prompt(70, 10))[0]
    assert layout(near[0])[0] == [BOS] + [CAT] * 70 + [COMMA] + [EOS] * 5
    far = conditioner(tokenizer, comma_padding_backtrack=5).tokenize_line(comma_prompt(69, 10))[0]
    assert layout(far[0])[0] == [BOS] + [CAT] * 69 + [COMMA] + [CAT] * 5 + [EOS]


def test_no_backtrack_when_the_prompt_ends_at_75(tokenizer):
    chunks, count = conditioner(tokenizer).tokenize_line(comma_prompt(70, 4))
    assert len(chunks) == 1
    assert count == 75


# ---------------------------------------------------------------- apply_emphasis


def test_apply_emphasis_modes():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(2, 77, 8, generator=generator, dtype=torch.float64) + 0.5
    mults = torch.ones(2, 77, dtype=torch.float64)
    mults[0, 3] = 1.5
    mults[1, 5:8] = 0.7

    weighted = z * mults[..., None]
    original = apply_emphasis(z.clone(), mults, "Original")
    torch.testing.assert_close(original, weighted * (z.mean() / weighted.mean()))
    torch.testing.assert_close(original.mean(), z.mean())
    torch.testing.assert_close(apply_emphasis(z.clone(), mults, "No norm"), weighted)
    torch.testing.assert_close(apply_emphasis(z.clone(), mults, "Ignore"), z)
    torch.testing.assert_close(apply_emphasis(z.clone(), mults, "None"), z)


# ---------------------------------------------------------------- encode


def test_encode_single_chunk_is_last_hidden_state(tokenizer, encoder):
    z = conditioner(tokenizer, encoder).encode(["a photo of a cat"])
    expected = run_model(encoder, [[BOS, A, PHOTO, OF, A, CAT] + [EOS] * 71]).last_hidden_state
    assert z.shape == (1, 77, 64)
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-5)


def test_encode_concatenates_chunks(tokenizer, encoder):
    z = conditioner(tokenizer, encoder).encode([words(76)])
    rows = [[BOS] + [CAT] * 75 + [EOS], [BOS] + [CAT] + [EOS] * 75]
    expected = run_model(encoder, rows).last_hidden_state  # (2, 77, 64): one row per chunk
    assert z.shape == (1, 154, 64)
    torch.testing.assert_close(z[0, :77], expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z[0, 77:], expected[1], rtol=1e-5, atol=1e-5)


def test_batch_with_different_chunk_counts_pads_with_empty_chunks(tokenizer, encoder):
    z = conditioner(tokenizer, encoder).encode([words(80), "a photo"])
    assert z.shape == (2, 154, 64)
    out = run_model(encoder, [
        [BOS] + [CAT] * 75 + [EOS],
        [BOS] + [CAT] * 5 + [EOS] * 71,
        [BOS, A, PHOTO] + [EOS] * 74,
        [BOS] + [EOS] * 76,
    ]).last_hidden_state
    torch.testing.assert_close(z[0], torch.cat([out[0], out[1]]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z[1], torch.cat([out[2], out[3]]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("skip", [2, 3])
def test_clip_skip_takes_an_earlier_layer_then_final_layer_norm(tokenizer, encoder, skip):
    row = [BOS, A, PHOTO, OF, A, CAT] + [EOS] * 71
    out = run_model(encoder, [row])
    expected = encoder.final_layer_norm(out.hidden_states[-skip]).detach()
    z = conditioner(tokenizer, encoder, clip_skip=skip).encode(["a photo of a cat"])
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-5)
    # and it is really different from the last layer (guards against a vacuous model)
    assert not torch.allclose(z, out.last_hidden_state, atol=1e-3)


def test_clip_skip_1_includes_the_final_layer_norm(tokenizer, encoder):
    row = [BOS, A, PHOTO, OF, A, CAT] + [EOS] * 71
    out = run_model(encoder, [row])
    z = conditioner(tokenizer, encoder, clip_skip=1).encode(["a photo of a cat"])
    torch.testing.assert_close(z, encoder.final_layer_norm(out.hidden_states[-1]).detach(), rtol=1e-5, atol=1e-5)


WEIGHTED = "a (photo:1.5) of [cat]"
WEIGHTED_ROW = [BOS, A, PHOTO, OF, CAT] + [EOS] * 72
WEIGHTED_MULTS = [1.0, 1.0, 1.5, 1.0, DOWN] + [1.0] * 72


def test_emphasis_original_restores_the_chunk_mean(tokenizer, encoder):
    z0 = run_model(encoder, [WEIGHTED_ROW]).last_hidden_state
    weighted = z0 * torch.tensor([WEIGHTED_MULTS])[..., None]
    expected = weighted * (z0.mean() / weighted.mean())
    assert not torch.allclose(expected, weighted, rtol=1e-4, atol=1e-5)  # the rescale is visible here
    z = conditioner(tokenizer, encoder, emphasis="Original").encode([WEIGHTED])
    torch.testing.assert_close(z, expected, rtol=1e-4, atol=1e-5)


def test_emphasis_original_mean_is_over_the_whole_batch_chunk(tokenizer, encoder):
    # spec §5.3: the means are over the whole chunk tensor (batch × tokens × channels)
    rows = [WEIGHTED_ROW, [BOS, A, CAT] + [EOS] * 74]
    mults = torch.tensor([WEIGHTED_MULTS, [1.0] * 77])[..., None]
    z0 = run_model(encoder, rows).last_hidden_state
    weighted = z0 * mults
    expected = weighted * (z0.mean() / weighted.mean())
    per_row = weighted * (z0.mean(dim=(1, 2), keepdim=True) / weighted.mean(dim=(1, 2), keepdim=True))
    assert not torch.allclose(expected, per_row, rtol=1e-4, atol=1e-5)  # the two readings differ here
    z = conditioner(tokenizer, encoder, emphasis="Original").encode([WEIGHTED, "a cat"])
    torch.testing.assert_close(z, expected, rtol=1e-4, atol=1e-5)


def test_emphasis_no_norm_only_multiplies(tokenizer, encoder):
    z0 = run_model(encoder, [WEIGHTED_ROW]).last_hidden_state
    expected = z0 * torch.tensor([WEIGHTED_MULTS])[..., None]
    z = conditioner(tokenizer, encoder, emphasis="No norm").encode([WEIGHTED])
    torch.testing.assert_close(z, expected, rtol=1e-4, atol=1e-5)


def test_emphasis_ignore_parses_but_drops_weights(tokenizer, encoder):
    expected = run_model(encoder, [WEIGHTED_ROW]).last_hidden_state
    z = conditioner(tokenizer, encoder, emphasis="Ignore").encode([WEIGHTED])
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-5)


def test_emphasis_none_encodes_brackets_literally(tokenizer, encoder):
    literal = tokenizer([WEIGHTED], add_special_tokens=False)["input_ids"][0]
    expected = run_model(encoder, [[BOS] + literal + [EOS] * (76 - len(literal))]).last_hidden_state
    z = conditioner(tokenizer, encoder, emphasis="None").encode([WEIGHTED])
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-5)
