"""The n-gram family (lmlab.models.ngram): KenLM's modified Kneser-Ney, stage by stage.

- a toy corpus whose counts, adjusted counts, counts of counts, discounts,
  probabilities and backoffs are worked out by hand below;
- WikiText-2 against KenLM's own outputs (shared/data/kenlm-reference): the ARPA files
  ``lmplz`` wrote for valid.txt (ours is the same, entry by entry and here byte for
  byte), the six test perplexities ``query`` reported, and its per-sentence totals;
- ARPA reading and writing, including broken files; save/load; pruning; generation;
  configs; token-id input; chunked counting.
"""

from __future__ import annotations

import gzip
import itertools
import math
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.core.errors import ConfigError, DataError
from lmlab.models.ngram import NGramConfig, NGramLM, read_sentences
from lmlab.models.ngram import arpa, count, pipeline, query
from lmlab.models.ngram.adjust_counts import adjust_counts
from lmlab.models.ngram.corpus import split_words
from lmlab.models.ngram.initial_probabilities import initial_probabilities
from lmlab.models.ngram.interpolate import interpolate
from lmlab.models.ngram.vocabulary import BOS, EOS, UNK, Vocabulary
from tests.conftest import data_path

RENAME = [("<unk>", "<oov>")]  # as the KenLM reference did: <unk> is reserved in KenLM

# KenLM's lmplz + query on WikiText-2 (kenlm-reference/README.md): test.txt perplexity.
REFERENCE_PPL = {
    ("train", 3): (226.05103446674326, 226.05103446674326, 0),
    ("train", 5): (220.13856701343005, 220.13856701343005, 0),
    ("valid", 3): (370.20527239198344, 266.26890824766497, 11896),
    ("valid", 5): (366.13111237902945, 263.46920644815, 11896),
}
TEST_TOKENS = 245_569  # 241,211 words + one </s> for each of the 4,358 lines


def close(a, b, rel=2e-6):
    """float32 arithmetic against exact fractions: equal to ~float32 precision."""
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-7)


# ---------------------------------------------------------------------------
# The toy corpus, by hand
# ---------------------------------------------------------------------------
#
#   a b a          padded for a trigram model (<s> <s> w1 .. </s>), the padded 3-grams are
#   a b b a          <s> <s> a  x2    <s> <s> b  x1    <s> <s> c  x1
#   c                <s> a b    x2    a b a      x1    b a </s>   x3
#   b b b a          a b b      x1    b b a      x2    <s> c </s> x1
#                    <s> b b    x1    b b b      x1
#
# Word ids follow first appearance after <unk> 0, <s> 1, </s> 2: a 3, b 4, c 5.

TOY = [line.split() for line in ("a b a", "a b b a", "c", "b b b a")]


def toy_stages():
    vocab = Vocabulary()
    ids = vocab.add(list(itertools.chain.from_iterable(TOY)))
    table = count.count_stream(count.sentence_stream(ids, [len(s) for s in TOY]), 3, len(vocab))
    adjusted = adjust_counts(table, len(vocab))
    return vocab, table, adjusted


def as_dict(vocab, grams, values):
    return {" ".join(vocab.word(i) for i in row): int(v) for row, v in zip(grams.tolist(), values)}


@pytest.fixture(scope="module")
def toy():
    return NGramLM.train(TOY, NGramConfig(order=3))


def test_toy_raw_counts():
    vocab, table, _ = toy_stages()
    assert as_dict(vocab, table.rows, table.counts) == {
        "<s> <s> a": 2, "<s> <s> b": 1, "<s> <s> c": 1, "<s> a b": 2, "a b a": 1, "b a </s>": 3,
        "a b b": 1, "b b a": 2, "<s> c </s>": 1, "<s> b b": 1, "b b b": 1}
    # Suffix order: by last word (</s> 2 < a 3 < b 4 < c 5), then the word before, ...
    assert [" ".join(vocab.word(i) for i in row) for row in table.rows[:3].tolist()] == [
        "b a </s>", "<s> c </s>", "<s> <s> a"]


def test_toy_adjusted_counts():
    vocab, _, adjusted = toy_stages()
    grams = [adjusted.grams(k) for k in (1, 2, 3)]
    # 3-grams (no <s> after the first slot) keep their raw counts.
    assert as_dict(vocab, grams[2], adjusted.orders[2].adjusted) == {
        "<s> a b": 2, "a b a": 1, "b a </s>": 3, "a b b": 1, "b b a": 2, "<s> c </s>": 1, "<s> b b": 1,
        "b b b": 1}
    # 2-grams: a(g) = number of distinct words before g among the 3-grams,
    #   a b <- {<s>}: 1;   b a <- {a, b}: 2;   a </s> <- {b}: 1;   b b <- {a, <s>, b}: 3;   c </s> <- {<s>}: 1
    # except that n-grams starting with <s> keep their raw count (KenLM):
    #   <s> a: 2 (its continuation count would be 1),   <s> b: 1,   <s> c: 1
    assert as_dict(vocab, grams[1], adjusted.orders[1].adjusted) == {
        "a b": 1, "b a": 2, "a </s>": 1, "b b": 3, "c </s>": 1, "<s> a": 2, "<s> b": 1, "<s> c": 1}
    # 1-grams: distinct words before w among the 2-grams,
    #   a <- {<s>, b}: 2;   b <- {a, b, <s>}: 3;   c <- {<s>}: 1;   </s> <- {a, c}: 2;   <unk>, <s>: 0
    assert as_dict(vocab, grams[0], adjusted.orders[0].adjusted) == {
        "<unk>": 0, "<s>": 0, "</s>": 2, "a": 2, "b": 3, "c": 1}
    # Raw counts of lower orders count every occurrence: "b a" occurs 3 times, "b b" 3 times.
    assert as_dict(vocab, grams[1], adjusted.orders[1].raw)["b b"] == 3


def test_toy_counts_of_counts_and_discounts():
    _, _, adjusted = toy_stages()
    #                       n1 n2 n3 n4
    assert adjusted.counts_of_counts[:, 1:].tolist() == [[1, 2, 1, 0],   # 1-grams: c | a, </s> | b
                                                         [5, 2, 1, 0],   # 2-grams
                                                         [5, 2, 1, 0]]   # 3-grams
    # D_j = j - (j+1) Y n_{j+1} / n_j with Y = n1 / (n1 + 2 n2):
    # 1-grams: Y = 1/5;  D1 = 1 - 2(1/5)(2/1) = 1/5;  D2 = 2 - 3(1/5)(1/2) = 17/10;  D3+ = 3 - 4(1/5)(0/1) = 3
    # 2- and 3-grams: Y = 5/9;  D1 = 1 - 2(5/9)(2/5) = 5/9;  D2 = 2 - 3(5/9)(1/2) = 7/6;  D3+ = 3
    expected = [[F(1, 5), F(17, 10), 3], [F(5, 9), F(7, 6), 3], [F(5, 9), F(7, 6), 3]]
    for got, want in zip(adjusted.discounts[:, 1:], expected):
        assert all(close(g, w) for g, w in zip(got, want)), (got, want)


# Unigrams: denominator 2+3+1+2 = 8; gamma() = (D1 N1 + D2 N2 + D3 N3+) / 8
#   = (1/5 * 1 + 17/10 * 2 + 3 * 1) / 8 = (33/5) / 8 = 33/40; uniform 1/|V| = 1/5 (<s> excluded)
# p(w) = (a(w) - D(a(w))) / 8 + 33/40 * 1/5:
P_A = F(2 - F(17, 10), 8) + F(33, 200)  # = 3/80 + 33/200 = 81/400 = 0.2025 (also p(</s>))
P_B = F(3 - 3, 8) + F(33, 200)  # = 0.165 (also p(<unk>): count 0)
P_C = F(1 - F(1, 5), 8) + F(33, 200)  # = 1/10 + 33/200 = 0.265
# Bigram contexts (D1 = 5/9, D2 = 7/6, D3+ = 3):
#   <s>: <s> a (2), <s> b (1), <s> c (1): denominator 4, gamma = (5/9 * 2 + 7/6 * 1) / 4 = 41/72
#   a:   a b (1), a </s> (1): gamma = (5/9 * 2) / 2 = 5/9
#   b:   b a (2), b b (3): gamma = (7/6 + 3) / 5 = 5/6
G_BOS, G_A, G_B = F(41, 72), F(5, 9), F(5, 6)
P_A_BOS = F(2 - F(7, 6), 4) + G_BOS * P_A  # p(a | <s>) = 5/24 + 41/72 * 81/400
P_B_A = F(1 - F(5, 9), 2) + G_A * P_B  # p(b | a) = 2/9 + 5/9 * 0.165
P_A_B = F(2 - F(7, 6), 5) + G_B * P_A  # p(a | b) = 1/6 + 5/6 * 0.2025
P_EOS_A = F(1 - F(5, 9), 2) + G_A * P_A  # p(</s> | a) = 2/9 + 5/9 * 0.2025
# Trigram contexts:
#   <s> a: <s> a b (2): gamma = (7/6) / 2 = 7/12
#   a b:   a b a (1), a b b (1): gamma = (5/9 * 2) / 2 = 5/9
#   b b:   b b a (2), b b b (1): gamma = (5/9 + 7/6) / 3 = 31/54
#   b a:   b a </s> (3): gamma = 3 / 3 = 1, so its backoff is log10 1 = 0
P_B_BOS_A = F(2 - F(7, 6), 2) + F(7, 12) * P_B_A  # p(b | <s> a)
P_A_AB = F(1 - F(5, 9), 2) + F(5, 9) * P_A_B  # p(a | a b)
P_A_BB = F(2 - F(7, 6), 3) + F(31, 54) * P_A_B  # p(a | b b)
P_EOS_BA = F(3 - 3, 3) + 1 * P_EOS_A  # p(</s> | b a)


def test_toy_probabilities_and_backoffs(toy):
    def entry(words):
        ids = [toy.vocabulary.id(w) for w in words.split()]
        index = query.ngram_indices(toy.tables, np.array(ids), np.arange(len(ids)))[len(ids) - 1][-1]
        assert index >= 0, words
        k = len(ids) - 1
        return 10.0 ** float(toy.tables.log10_prob[k][index]), 10.0 ** float(toy.tables.log10_backoff[k][index])

    assert close(P_A, F(81, 400)) and close(P_C, F(53, 200))
    assert all(close(entry(w)[0], p) for w, p in [("a", P_A), ("b", P_B), ("c", P_C), ("</s>", P_A),
                                                   ("<unk>", P_B)])
    assert sum(entry(w)[0] for w in ("a", "b", "c", "</s>", "<unk>")) == pytest.approx(1.0, abs=1e-6)
    assert entry("<s>") == (1.0, pytest.approx(float(G_BOS), rel=2e-6))  # log10 p(<s>) = 0, as lmplz writes
    assert close(entry("a")[1], G_A) and close(entry("b")[1], G_B)
    assert entry("</s>")[1] == 1.0 and entry("<unk>")[1] == 1.0  # never contexts: backoff 0
    for words, p in [("<s> a", P_A_BOS), ("a b", P_B_A), ("b a", P_A_B), ("a </s>", P_EOS_A),
                     ("<s> a b", P_B_BOS_A), ("a b a", P_A_AB), ("b b a", P_A_BB), ("b a </s>", P_EOS_BA)]:
        assert close(entry(words)[0], p), words
    assert close(entry("<s> a")[1], F(7, 12)) and close(entry("b b")[1], F(31, 54))
    assert entry("b a")[1] == 1.0


def test_toy_backoff_scoring(toy):
    # "a b c" and "b c" are not listed: p(c | a b) = b(a b) b(b) p(c) = 5/9 * 5/6 * 0.265,
    # which is also the interpolated value: gamma(a b) * (gamma(b) * p(c)) with zero counts.
    assert close(10 ** toy.log10_prob("c", ["a", "b"]), F(5, 9) * G_B * P_C)
    # An unknown word is <unk>: p(<unk> | a b) = b(a b) b(b) p(<unk>).
    assert toy.log10_prob("zebra", ["a", "b"]) == toy.log10_prob("<unk>", ["a", "b"])
    assert close(10 ** toy.log10_prob("zebra", ["a", "b"]), F(5, 9) * G_B * P_B)
    # A sentence: <s> a b a </s> = p(a|<s>) p(b|<s> a) p(a|a b) p(</s>|b a)
    total = toy.score_sentence(["a", "b", "a"])
    assert total == pytest.approx(math.log10(P_A_BOS * P_B_BOS_A * P_A_AB * P_EOS_BA), abs=2e-6)
    assert toy.score_sentence(["a"], bos=False, eos=False) == pytest.approx(math.log10(P_A), abs=1e-6)


def test_toy_distributions_sum_to_one(toy):
    for history in ([BOS], [BOS, 3], [3, 4], [4, 4], [5], [4, 3], [UNK, 4]):
        probs = query.next_word_distribution(toy.tables, history)
        probs[BOS] = 0.0  # log10 p(<s>) = 0 is a convention: <s> is never predicted
        assert probs.sum() == pytest.approx(1.0, abs=2e-6), history


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdef"), max_size=7), min_size=1, max_size=30), st.integers(1, 4),
       st.lists(st.integers(0, 5), max_size=3))
def test_random_models_are_normalised(sentences, order, history):
    """For any corpus and context, p(w | h) over the vocabulary (without <s>) sums to 1."""
    model = NGramLM.train(sentences, NGramConfig(order=order, discount_fallback=(0.5, 1.0, 1.5)))
    history = [BOS] + [min(i, model.vocab_size - 1) for i in history if i != BOS]
    probs = query.next_word_distribution(model.tables, history)
    probs[BOS] = 0.0
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    # and the vectorised scorer agrees with the distribution
    word = int(np.argmax(probs))
    tokens = np.array(history + [word], np.int32)
    log10 = query.score(model.tables, tokens, np.arange(len(tokens)))[-1]
    assert 10.0 ** float(log10) == pytest.approx(probs[word], rel=1e-5)


def test_toy_pruning():
    pruned = NGramLM.train(TOY, NGramConfig(order=3, prune=(0, 1)))  # thresholds 0, 1, 1
    # Raw counts <= 1 go: 2-grams <s> b, <s> c, c </s>; 3-grams but <s> a b, b a </s>, b b a.
    assert pruned.counts == [6, 8 - 3, 8 - 5]
    assert pruned.statistics["counts_before_pruning"] == [6, 8, 8]
    # Discounts come from the unpruned counts of counts; the pruned n-grams' adjusted counts
    # join the context's gamma: gamma(<s>) = (7/6 * 1 + (1 + 1)) / 4 = 19/24.
    assert close(10 ** pruned.log10_prob("c", ["<s>"]), F(19, 24) * P_C)
    assert close(10 ** pruned.log10_prob("a", ["<s>"]), F(5, 24) + F(19, 24) * P_A)  # unchanged u
    probs = query.next_word_distribution(pruned.tables, [BOS])
    probs[BOS] = 0
    assert probs.sum() == pytest.approx(1.0, abs=2e-6)  # still sums to 1


def test_last_open_ngrams_use_raw_counts_in_counts_of_counts():
    # KenLM adds the n-grams still open at the end of its stream (the suffixes of the last
    # padded N-gram in suffix order) to the counts of counts with their raw count. Here that
    # N-gram is "c b a" (a has the largest id), so unigram "a" (adjusted 2, raw 4) counts as 4.
    corpus = [line.split() for line in ("b b", "c b a", "b b a", "c b", "b a", "a")]
    vocab = Vocabulary()
    ids = vocab.add(list(itertools.chain.from_iterable(corpus)))
    table = count.count_stream(count.sentence_stream(ids, [len(s) for s in corpus]), 3, len(vocab))
    adjusted = adjust_counts(table, len(vocab))
    unigrams = as_dict(vocab, adjusted.grams(1), adjusted.orders[0].adjusted)
    assert unigrams["a"] == 2 and as_dict(vocab, adjusted.grams(1), adjusted.orders[0].raw)["a"] == 4
    assert adjusted.counts_of_counts[0, 1:].tolist() == [1, 1, 1, 1]  # c 1 | </s> 2 | b 3 | a as 4


def test_stage_functions_equal_the_pipeline():
    """The per-order pipeline (used for training) against the stage-by-stage reference."""
    sentences = list(read_sentences(data_path("wikitext-2", "valid.txt"), RENAME))[:1500]
    vocab = Vocabulary()
    ids = vocab.add(list(itertools.chain.from_iterable(sentences)))
    table = count.count_stream(count.sentence_stream(ids, [len(s) for s in sentences]), 4, len(vocab))
    for prune in ([0, 0, 0, 0], [0, 1, 1, 2]):
        adjusted = adjust_counts(table, len(vocab), prune)
        reference = interpolate(adjusted, initial_probabilities(adjusted, len(vocab)), len(vocab))
        fast, stats = pipeline.estimate(table, len(vocab), prune)
        assert stats.counts_of_counts == adjusted.counts_of_counts[:, 1:].tolist()
        for name in ("keys", "log10_prob", "log10_backoff"):
            for a, b in zip(getattr(reference, name), getattr(fast, name)):
                np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# Counting: chunks, suffix order, tokenisation
# ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdefg"), max_size=6), min_size=1, max_size=25),
       st.integers(1, 4), st.integers(1, 12))
def test_chunked_counting_equals_one_pass(sentences, order, chunk):
    vocab = Vocabulary()
    ids = vocab.add(list(itertools.chain.from_iterable(sentences)))
    stream = count.sentence_stream(ids, [len(s) for s in sentences])
    whole = count.count_stream(stream, order, len(vocab))
    counter = count.Counter(order, max_pending_rows=5)
    ends = np.flatnonzero(stream == EOS) + 1
    for lo, hi in zip(np.r_[0, ends[:-1]][::chunk], np.r_[ends[chunk - 1::chunk], ends[-1]]):
        counter.add(stream[lo:hi], len(vocab))
    merged = counter.finish(len(vocab))
    np.testing.assert_array_equal(merged.rows, whole.rows)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    # Against a plain Python count of the padded windows, in suffix order.
    expected: dict = {}
    for sentence in sentences:
        padded = ["<s>"] * (order - 1) + sentence + ["</s>"]
        for end in range(order - 1, len(padded)):
            gram = tuple(vocab.id(w) for w in padded[end - order + 1:end + 1])
            expected[gram] = expected.get(gram, 0) + 1
    keys = sorted(expected, key=lambda g: g[::-1])
    assert [tuple(r) for r in whole.rows.tolist()] == keys
    assert whole.counts.tolist() == [expected[g] for g in keys]


def test_suffix_order_with_wide_ids_and_many_columns():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 2**20, size=(5000, 6)).astype(np.int32)
    rows[::3] = rows[1::3][: len(rows[::3])]  # duplicates
    order, new = count.suffix_order(rows, 20)
    expected = np.lexsort(rows.T)  # the last column is the primary key
    np.testing.assert_array_equal(rows[order], rows[expected])
    np.testing.assert_array_equal(new[1:], (np.diff(rows[order], axis=0) != 0).any(axis=1))


def test_kenlm_tokenisation(tmp_path):
    assert split_words(" a\tb\r c\x00d  ") == ["a", "b", "c", "d"]
    assert split_words("a\xa0b c\x0cd") == ["a\xa0b", "c\x0cd"]  # not delimiters for KenLM
    path = tmp_path / "corpus.txt.gz"
    with gzip.open(path, "wb") as handle:
        handle.write("x <unk> y\n\n  \nlast line".encode())
    assert list(read_sentences(path, RENAME)) == [["x", "<oov>", "y"], [], [], ["last", "line"]]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nbroken \xff\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: not valid UTF-8"):
        list(read_sentences(bad))


# ---------------------------------------------------------------------------
# WikiText-2 against KenLM
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_sentences():
    return list(read_sentences(data_path("wikitext-2", "test.txt"), RENAME))


@pytest.fixture(scope="module")
def models():
    """Our models trained on WikiText-2's train and valid splits, built once."""
    built = {}

    def get(split, order):
        if (split, order) not in built:
            text = data_path("wikitext-2", f"{split}.txt")
            built[split, order] = NGramLM.train(read_sentences(text, RENAME), NGramConfig(order=order))
        return built[split, order]

    return get


@pytest.fixture(scope="module")
def kenlm_models():
    return {order: NGramLM.from_arpa(data_path("kenlm-reference", f"valid.o{order}.arpa.gz")) for order in (3, 5)}


@pytest.mark.parametrize("order", [3, 5])
def test_valid_model_equals_kenlm_arpa(models, kenlm_models, order, tmp_path):
    ours, theirs = models("valid", order), kenlm_models[order]
    # Words are numbered as lmplz numbers them, so the same n-grams have the same keys.
    assert ours.vocabulary.words == theirs.vocabulary.words
    for k in range(order):
        np.testing.assert_array_equal(ours.tables.keys[k], theirs.tables.keys[k])  # the same n-grams
        assert not np.isnan(theirs.tables.log10_prob[k]).any()  # and no blanks: lmplz lists every one
        np.testing.assert_allclose(ours.tables.log10_prob[k], theirs.tables.log10_prob[k], rtol=0, atol=1e-5)
        np.testing.assert_allclose(ours.tables.log10_backoff[k], theirs.tables.log10_backoff[k], rtol=0, atol=1e-5)
    # The same lines in the same order, and the same number written with the same (shortest float32)
    # digits. Where NumPy uses its own AVX-512 log10f (not glibc's, as lmplz), the last bit of many
    # values moves, so a line may differ, but only by a different float32 within 1e-5.
    with gzip.open(data_path("kenlm-reference", f"valid.o{order}.arpa.gz"), "rt", encoding="utf-8") as handle:
        reference_lines = handle.read().split("\n")
    our_lines = ours.to_arpa(tmp_path / "ours.arpa").read_text(encoding="utf-8").split("\n")
    assert len(our_lines) == len(reference_lines)
    for line, reference in zip(our_lines, reference_lines):
        if line == reference:
            continue
        fields, expected = line.split("\t"), reference.split("\t")
        assert len(fields) == len(expected) > 1 and fields[1] == expected[1], (line, reference)
        for value, want in zip(fields[::2], expected[::2]):  # log10 probability, back-off
            assert value == want or (np.float32(value) != np.float32(want)
                                     and abs(float(value) - float(want)) <= 1e-5), (line, reference)


@pytest.mark.parametrize("split,order", sorted(REFERENCE_PPL))
def test_perplexity_matches_kenlm(models, test_sentences, split, order):
    result = models(split, order).perplexity(test_sentences)
    including, excluding, oov = REFERENCE_PPL[split, order]
    assert result["tokens"] == TEST_TOKENS and result["oov"] == oov and result["sentences"] == 4358
    assert result["perplexity"] == pytest.approx(including, rel=1e-3)
    assert result["perplexity_excluding_oov"] == pytest.approx(excluding, rel=1e-3)
    # The same float32 arithmetic as lmplz and query: equal to 1e-7 with glibc's log10f; NumPy's own
    # AVX-512 log10f moves the last bit of many values, which moves the perplexity by about 3e-7.
    assert result["perplexity"] == pytest.approx(including, rel=1e-6)


@pytest.mark.parametrize("order", [3, 5])
def test_kenlm_arpa_sentence_totals(kenlm_models, test_sentences, order):
    expected = np.loadtxt(data_path("kenlm-reference", f"test.valid-o{order}.sentence-log10.txt"))
    totals = kenlm_models[order].sentence_log10(test_sentences)
    assert len(totals) == len(expected) == 4358
    assert np.abs(totals - expected).max() < 1e-4
    assert kenlm_models[order].score_sentence(test_sentences[1]) == pytest.approx(expected[1], abs=1e-4)


# ---------------------------------------------------------------------------
# ARPA files
# ---------------------------------------------------------------------------


def test_arpa_round_trip(models, test_sentences, tmp_path):
    model = models("valid", 3)
    for name in ("model.arpa", "model.arpa.gz"):
        again = NGramLM.from_arpa(model.to_arpa(tmp_path / name))
        assert again.vocabulary.words == model.vocabulary.words
        for k in range(3):
            np.testing.assert_array_equal(again.tables.keys[k], model.tables.keys[k])
            np.testing.assert_array_equal(again.tables.log10_prob[k], model.tables.log10_prob[k])
            np.testing.assert_array_equal(again.tables.log10_backoff[k], model.tables.log10_backoff[k])
    some = test_sentences[:300]
    np.testing.assert_array_equal(again.sentence_log10(some), model.sentence_log10(some))


def test_float_formatting_is_shortest_round_trip():
    rng = np.random.default_rng(1)
    values = np.concatenate([-(rng.random(20000) * 7), rng.normal(size=2000) * 10.0 ** rng.integers(-9, 7, 2000),
                             [0.0, -0.0, -99, -100, 1e-7, 9.999999e-8, 123456.7, 1e6, -4.936203]]).astype(np.float32)
    texts = arpa.format_floats(values)
    for value, text in zip(values, texts):
        assert np.float32(float(text)) == value, (value, text)
        if value == 0:
            assert text == "0"
        elif 1e-7 <= abs(value) < 1e6:
            assert text == np.format_float_positional(value, unique=True, trim="-")


def test_reading_srilm_style_arpa(tmp_path):
    # Spaces instead of tabs, backoffs left out, no <unk>, a missing suffix ("b c" for "a b c")
    # and a missing context ("x y" for "x y z" would be one; here "b a" for "b a c").
    path = tmp_path / "sri.arpa"
    path.write_text("some header\n\\data\\\nngram 1=5\nngram 2=2\nngram 3=2\n\n\\1-grams:\n"
                    "-1.0 <s> -0.5\n-0.7 </s>\n-0.6 a -0.3\n-0.8 b -0.2\n-0.9 c\n\n"
                    "\\2-grams:\n-0.2 <s> a -0.1\n-0.3 a b -0.4\n\n"
                    "\\3-grams:\n-0.05 <s> a b\n-0.06 a b c\n\n\\end\\\n")
    model = NGramLM.from_arpa(path)
    assert model.counts == [6, 2, 2]  # <unk> added with log10 p = -100, as KenLM does
    assert model.log10_prob("zzz") == pytest.approx(-100)
    assert model.log10_prob("c", ["a", "b"]) == pytest.approx(-0.06)
    # "b c" is a blank entry: p(c | b) backs off to b(b) + p(c)
    assert model.log10_prob("c", ["b"]) == pytest.approx(-0.2 - 0.9)
    assert model.log10_prob("c", ["x", "a", "b"]) == pytest.approx(-0.06)
    assert model.log10_prob("a", ["<s>"]) == pytest.approx(-0.2)
    # "<s> a c" and "a c" are not listed: b(<s> a) + b(a) + p(c)
    assert model.log10_prob("c", ["<s>", "a"]) == pytest.approx(-0.1 - 0.3 - 0.9)
    # Written back, blanks are left out and KenLM's layout is used.
    text = NGramLM.from_arpa(model.to_arpa(tmp_path / "back.arpa")).to_arpa(tmp_path / "again.arpa").read_text()
    assert "ngram 2=2" in text and "-0.06\ta b c" in text


BROKEN = {
    "truncated": ("\\data\\\nngram 1=3\n\n\\1-grams:\n-1\t<s>\t-1\n-1\t</s>\n", r":6: \\data\\ declares 3 1-grams"),
    "no end": ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t<s>\t-1\n-1\t</s>\n\n", r":7: expected \\end\\"),
    "bad count line": ("\\data\\\nngram one=2\n", r":2: expected 'ngram N=count'"),
    "wrong count": ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t<s>\n-1\t</s>\n-1\ta\n\n\\end\\\n",
                    r":7: \\data\\ declares 2 1-grams but the section lists 3"),
    "bad number": ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t<s>\n-x1\t</s>\n\n\\end\\\n",
                   r":6: bad log10 probability '-x1'"),
    "bad backoff": ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t<s>\tnan\n-1\t</s>\n\n\\end\\\n",
                    r":5: log10 backoff 'nan' is not a number or -inf"),
    "fields": ("\\data\\\nngram 1=2\nngram 2=1\n\n\\1-grams:\n-1\t<s>\n-1\t</s>\n\n\\2-grams:\n-1\t<s>\n\n\\end\\\n",
               r":10: a 2-gram line needs"),
    "unknown word": ("\\data\\\nngram 1=2\nngram 2=1\n\n\\1-grams:\n-1\t<s>\n-1\t</s>\n\n\\2-grams:\n-1\t<s> a\n\n"
                     "\\end\\\n", r":10: word 'a' is not in the \\1-grams: section"),
    "duplicate": ("\\data\\\nngram 1=3\n\n\\1-grams:\n-1\t<s>\n-1\t</s>\n-1\t<s>\n\n\\end\\\n",
                  r":7: unigram '<s>' is listed twice"),
    "no data": ("hello\n", r"not an ARPA file"),
    "missing section": ("\\data\\\nngram 1=1\nngram 2=1\n\n\\1-grams:\n-1\t<s>\n\n",
                        r":7: file ends before the \\2-grams"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_arpa_files(tmp_path, case):
    text, message = BROKEN[case]
    path = tmp_path / f"{case.replace(' ', '_')}.arpa"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as error:
        NGramLM.from_arpa(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_truncated_gzip_arpa(tmp_path, models):
    whole = models("valid", 3).to_arpa(tmp_path / "m.arpa.gz").read_bytes()
    cut = tmp_path / "cut.arpa.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"cut\.arpa\.gz:\d+: cannot read \(truncated or corrupt file\?\)"):
        NGramLM.from_arpa(cut)
    with pytest.raises(DataError, match="not found"):
        NGramLM.from_arpa(tmp_path / "missing.arpa")


# ---------------------------------------------------------------------------
# Save and load, pruning, generation, configs, inputs
# ---------------------------------------------------------------------------


def test_save_and_load(models, test_sentences, tmp_path):
    model = models("valid", 5)
    again = NGramLM.load(model.save(tmp_path / "model"))
    assert again.config == model.config and again.statistics == model.statistics
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors",
                                                                      "vocabulary.json"]
    np.testing.assert_array_equal(again.sentence_log10(test_sentences), model.sentence_log10(test_sentences))
    assert again.generate(max_words=20, seed=3) == model.generate(max_words=20, seed=3)
    # Damage is reported as a DataError naming the file.
    (tmp_path / "model" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataError, match=r"model\.safetensors: not a readable safetensors file"):
        NGramLM.load(tmp_path / "model")
    with pytest.raises(DataError, match=r"config\.json"):
        NGramLM.load(tmp_path / "nowhere")


def test_pruning_on_wikitext(models):
    sentences = list(read_sentences(data_path("wikitext-2", "valid.txt"), RENAME))
    full = models("valid", 3)
    pruned = NGramLM.train(sentences, NGramConfig(order=3, prune=(0, 1, 2)))
    # What --prune 0 1 2 removes: bigrams seen once, trigrams seen at most twice.
    vocab = Vocabulary()
    ids = vocab.add(list(itertools.chain.from_iterable(sentences)))
    adjusted = adjust_counts(count.count_stream(count.sentence_stream(ids, [len(s) for s in sentences]), 3,
                                                len(vocab)), len(vocab))
    assert pruned.counts == [full.counts[0], int((adjusted.orders[1].raw > 1).sum()),
                             int((adjusted.orders[2].raw > 2).sum())]
    assert pruned.counts[1] < full.counts[1] and pruned.counts[2] < full.counts[2]
    assert pruned.statistics["discounts"] == full.statistics["discounts"]
    probs = query.next_word_distribution(pruned.tables, [BOS, vocab.id("the")])
    probs[BOS] = 0
    assert probs.sum() == pytest.approx(1.0, abs=1e-4)


def test_generation(models):
    model = models("valid", 3)
    first = model.generate(["The"], max_words=30, seed=7)
    assert first == model.generate(["The"], max_words=30, seed=7)
    assert first != model.generate(["The"], max_words=30, seed=8)
    samples = [model.generate(max_words=25, seed=s) for s in range(10)]
    words = set(itertools.chain.from_iterable(samples)) | set(first)
    assert words <= set(model.vocabulary.words) - {"<s>", "</s>", "<unk>"}
    assert all(len(s) <= 25 for s in samples) and model.generate(max_words=0) == []
    assert any(len(s) < 25 for s in samples)  # some sentences end with </s>


@pytest.mark.parametrize("kwargs,field", [
    ({"order": 0}, "order"), ({"order": 7}, "order"), ({"order": "5"}, "order"), ({"order": True}, "order"),
    ({"prune": (0, 1, 1, 1, 1, 1)}, "prune"), ({"prune": (1,)}, "prune"), ({"prune": (0, 2, 1)}, "prune"),
    ({"prune": (0, -1)}, "prune"), ({"prune": "0 1"}, "prune"), ({"family": "rnn"}, "family"),
    ({"discount_fallback": (0.5, 1)}, "discount_fallback"), ({"discount_fallback": (2, 1, 1)}, "discount_fallback"),
    ({"chunk_tokens": 0}, "chunk_tokens")])
def test_bad_configs(kwargs, field):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        NGramConfig(**kwargs)


def test_config_round_trip_and_errors():
    config = NGramConfig(order=4, prune=[0, 0, 1], discount_fallback=[0.5, 1, 1.5])
    assert config.prune == (0, 0, 1) and config.thresholds() == (0, 0, 1, 1)
    assert NGramConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="^unknown n-gram config field\\(s\\): smoothing"):
        NGramConfig.from_dict({"order": 3, "smoothing": "kn"})
    with pytest.raises(ConfigError, match="^config:"):
        NGramLM.train(TOY, {"order": 3})


def test_tiny_data_needs_discount_fallback():
    with pytest.raises(DataError, match="cannot estimate Kneser-Ney discounts for 1-grams"):
        NGramLM.train([["a", "b"]], NGramConfig(order=2))
    model = NGramLM.train([["a", "b"]], NGramConfig(order=2, discount_fallback=(0.5, 1.0, 1.5)))
    assert model.statistics["discount_fallback_orders"] == [1, 2]
    assert model.statistics["discounts"][0] == [0.5, 1.0, 1.5]


def test_training_input_errors():
    with pytest.raises(DataError, match=r"sentence 2 contains the reserved word '</s>'"):
        NGramLM.train([["a"], ["b", "</s>"]], NGramConfig(order=2))
    with pytest.raises(DataError, match=r"sentence 1 is a string"):
        NGramLM.train(["a b c"], NGramConfig(order=2))
    with pytest.raises(DataError, match=r"sentence 2: word 3 is not a string"):
        NGramLM.train([["a"], ["b", 3]], NGramConfig(order=2))
    with pytest.raises(DataError, match="no sentences"):
        NGramLM.train([], NGramConfig(order=2))


def test_token_ids_with_a_vocabulary_equal_words():
    sentences = list(read_sentences(data_path("wikitext-2", "valid.txt"), RENAME))[:3000]
    words = sorted(set(itertools.chain.from_iterable(sentences)) | {"unused", "<unk>"})  # a tokenizer's list
    index = {w: i for i, w in enumerate(words)}
    shards = [np.array([index[w] for w in s], np.int32) for s in sentences]
    config = NGramConfig(order=3, chunk_tokens=5000)  # several chunks, merged
    from_ids = NGramLM.train(shards, config, vocabulary=words)
    from_words = NGramLM.train(sentences, NGramConfig(order=3))
    assert from_ids.vocabulary.words == from_words.vocabulary.words
    for k in range(3):
        np.testing.assert_array_equal(from_ids.tables.keys[k], from_words.tables.keys[k])
        np.testing.assert_array_equal(from_ids.tables.log10_prob[k], from_words.tables.log10_prob[k])
    with pytest.raises(DataError, match="token id 99999 is outside the vocabulary"):
        NGramLM.train([np.array([99999])], config, vocabulary=words)


def test_order_one_and_six():
    sentences = list(read_sentences(data_path("wikitext-2", "valid.txt"), RENAME))[:2000]
    unigram = NGramLM.train(sentences, NGramConfig(order=1))
    probs = np.power(10.0, unigram.tables.log10_prob[0].astype(np.float64))
    probs[BOS] = 0  # p(<s>) = 1 by convention
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    six = NGramLM.train(sentences, NGramConfig(order=6))
    assert len(six.counts) == 6 and six.perplexity(sentences[:200])["perplexity"] < 20
