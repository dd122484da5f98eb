"""Textual-inversion placeholders in the tokenizer path (spec §5.4, §5.7): names found by tokens,
longest first, one slot per vector, whole embeddings moved to the next chunk, and the vectors in
place of the token embeddings when encoding — checked against a CLIP model whose vocabulary really
contains the vectors as extra tokens."""

from __future__ import annotations

import copy

import pytest
import torch

from modules.core.conditioning.clip_text import ClipTextConditioner, TextOptions
from modules.core.conditioning.textual_inversion import EmbeddingLookup, TextualInversion
from tests.fixtures.clip import clip_tokenizer, random_clip_text_model

BOS, EOS, CAT, A = 49406, 49407, 2368, 320
WIDTH = 32


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer()


@pytest.fixture(scope="module")
def encoder():
    return random_clip_text_model(hidden_size=WIDTH, seed=99)


def embedding(name, count, seed):
    return TextualInversion(name, torch.randn((count, WIDTH), generator=torch.Generator().manual_seed(seed)))


@pytest.fixture(scope="module")
def embeddings():
    return [embedding("sparkly-style", 3, 1), embedding("sparkly", 2, 2), embedding("bad-hands-5", 6, 3)]


def conditioner(tokenizer, encoder, embeddings, **options):
    return ClipTextConditioner(tokenizer, encoder, TextOptions(**options), EmbeddingLookup(tokenizer, embeddings))


def name_tokens(tokenizer, name):
    return tokenizer([name], add_special_tokens=False)["input_ids"][0]


def test_names_are_found_by_tokens_longest_first(tokenizer, embeddings):
    lookup = EmbeddingLookup(tokenizer, embeddings)
    long_ids = name_tokens(tokenizer, "sparkly-style")
    short_ids = name_tokens(tokenizer, "sparkly")
    assert long_ids[: len(short_ids)] == short_ids and len(long_ids) > len(short_ids)
    tokens = [A] + long_ids + [CAT]
    assert lookup.find_at(tokens, 1) == (embeddings[0], len(long_ids))
    tokens = [A] + short_ids + [CAT]
    assert lookup.find_at(tokens, 1) == (embeddings[1], len(short_ids))
    assert lookup.find_at(tokens, 0) == (None, 0)


def test_placeholder_slots_weights_and_token_count(tokenizer, embeddings):
    chunks, count = conditioner(tokenizer, None, embeddings).tokenize_line("a (bad-hands-5:1.2) cat")
    assert count == 1 + 6 + 1
    (chunk,) = chunks
    assert chunk.tokens[:9] == [BOS, A, 0, 0, 0, 0, 0, 0, CAT]
    assert chunk.multipliers[:9] == [1.0, 1.0] + [1.2] * 6 + [1.0]
    assert chunk.fixes == [(1, embeddings[2])]
    # without the embedding the name is plain text
    plain, plain_count = conditioner(tokenizer, None, []).tokenize_line("a bad-hands-5 cat")
    assert plain[0].fixes == [] and plain_count == 2 + len(name_tokens(tokenizer, "bad-hands-5"))


def test_an_embedding_that_does_not_fit_moves_to_the_next_chunk(tokenizer, embeddings):
    chunks, count = conditioner(tokenizer, None, embeddings, comma_padding_backtrack=0).tokenize_line(
        " ".join(["cat"] * 72) + " bad-hands-5 cat")
    assert len(chunks) == 2
    assert chunks[0].tokens[1:73] == [CAT] * 72 and chunks[0].tokens[73:] == [EOS] * 4 and chunks[0].fixes == []
    assert chunks[1].fixes == [(0, embeddings[2])] and chunks[1].tokens[1:8] == [0] * 6 + [CAT]
    assert count == 75 + 7


def reference_encoder(encoder, embeddings):
    """The same CLIP with each embedding's vectors appended to the vocabulary as new token ids."""
    model = copy.deepcopy(encoder)
    old = model.get_input_embeddings().weight.data
    vectors = torch.cat([e.vectors for e in embeddings])
    table = torch.nn.Embedding(old.shape[0] + vectors.shape[0], WIDTH)
    table.weight.data = torch.cat([old, vectors])
    model.set_input_embeddings(table)
    ids, start = {}, old.shape[0]
    for e in embeddings:
        ids[e.name] = list(range(start, start + e.length))
        start += e.length
    return model, ids


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_encoding_puts_the_vectors_in_place_of_the_token_embeddings(tokenizer, encoder, embeddings, clip_skip):
    text = "a sparkly cat, sparkly-style"
    got = conditioner(tokenizer, encoder, embeddings, clip_skip=clip_skip, emphasis="None").encode([text])
    model, ids = reference_encoder(encoder, embeddings)
    row = [BOS, A] + ids["sparkly"] + [CAT, 267] + ids["sparkly-style"]
    row += [EOS] * (77 - len(row))
    with torch.no_grad():
        out = model(input_ids=torch.tensor([row]), output_hidden_states=True)
    expected = out.last_hidden_state if clip_skip == 1 else model.final_layer_norm(out.hidden_states[-clip_skip])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # and the hook is gone afterwards: the plain encoder is unchanged
    plain = conditioner(tokenizer, encoder, [], emphasis="None").encode(["a cat"])
    with torch.no_grad():
        direct = encoder(input_ids=torch.tensor([[BOS, A, CAT] + [EOS] * 74])).last_hidden_state
    assert torch.equal(plain, direct)


def test_batch_rows_get_their_own_vectors(tokenizer, encoder, embeddings):
    c = conditioner(tokenizer, encoder, embeddings, emphasis="None")
    both = c.encode(["a sparkly cat", "a cat"])
    assert torch.equal(both[0], c.encode(["a sparkly cat"])[0])
    assert torch.equal(both[1], c.encode(["a cat"])[0])
