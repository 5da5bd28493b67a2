"""The Kneser-Ney ARPA writer against a brute-force reading of the definitions, KenLM's own reading of the file, and
the normalisation every conditional distribution must have."""

import itertools
import math

import pytest

from hf_wav2vec2.ngram import BOS, EOS, UNK, discounts, kneser_ney, main, write_arpa

TEXT = ["the cat sat", "the cat sat on the mat", "a cat sat on a mat", "the dog sat", "a dog ran",
        "the dog ran on the mat", "the cat ran", "a mat", "the the cat", "dog sat on the cat", "the cat sat"]
SENTENCES = [line.split() for line in TEXT]


def test_discounts_from_counts_of_counts_by_hand():
    # t1 = 4, t2 = 2, t3 = 1, t4 = 1: Y = 4 / (4 + 2 * 2) = 0.5, D1 = 1 - 2 * 0.5 * 2 / 4 = 0.5,
    # D2 = 2 - 3 * 0.5 * 1 / 2 = 1.25, D3+ = 3 - 4 * 0.5 * 1 / 1 = 1.0
    counts = dict(zip("abcdefgh", (1, 1, 1, 1, 2, 2, 3, 4)))
    assert discounts(counts) == pytest.approx((0.5, 1.25, 1.0))
    # a count of counts is 0 (nothing seen once): lmplz's fallback discounts
    assert discounts(dict(zip("abcdefgh", (2, 2, 2, 3, 3, 4, 4, 5)))) == (0.5, 1.0, 1.5)
    # D2 = 2 - 3 * (1 / 3) * 4 / 1 = -2 is not a discount: the fallback again
    assert discounts(dict(zip("abcdefgh", (1, 2, 3, 3, 3, 3, 4, 4)))) == (0.5, 1.0, 1.5)


def reference_model(sentences, order):
    """p(w | h) straight from Chen & Goodman's definitions, recounting the padded sentences for every question."""
    padded = [(BOS, *words, EOS) for words in sentences]

    def occurrences(ngram):
        return [(s, i) for s in padded for i in range(len(s) - len(ngram) + 1) if s[i : i + len(ngram)] == ngram]

    def count(ngram):  # the count Kneser-Ney uses at the n-gram's order
        if len(ngram) == order or ngram[0] == BOS:
            return len(occurrences(ngram))
        return len({s[i - 1] for s, i in occurrences(ngram) if i > 0})

    def all_ngrams(n):
        return {s[i : i + n] for s in padded for i in range(len(s) - n + 1)}

    vocabulary = sorted({w for s in padded for w in s[1:]} | {UNK})
    order_discounts = {n: discounts({g: count(g) for g in all_ngrams(n) if g != (BOS,)}) for n in range(1, order + 1)}

    def probability(word, context):
        context = context[max(len(context) - order + 1, 0) :] if order > 1 else ()
        if not context:
            n, lower = 1, 1.0 / len(vocabulary)
        else:
            n, lower = len(context) + 1, probability(word, context[1:])
        followers = {g: count(g) for g in all_ngrams(n) if g[:-1] == context and g != (BOS,)}
        total = sum(followers.values())
        if total == 0:  # a context never seen: all the mass goes to the shorter context
            return lower
        d = order_discounts[n]
        gamma = sum(d[min(c, 3) - 1] for c in followers.values()) / total
        seen = followers.get((*context, word), 0)
        return (max(seen - d[min(seen, 3) - 1], 0) if seen else 0) / total + gamma * lower

    return probability, vocabulary


def read_arpa(path):
    entries = {}
    for line in open(path, encoding="utf-8"):
        fields = line.strip().split("\t")
        if len(fields) >= 2 and not line.startswith("ngram"):
            entries[tuple(fields[1].split())] = (float(fields[0]), float(fields[2]) if len(fields) == 3 else 0.0)
    return entries


def arpa_log10(entries, word, context):
    """The standard backoff query of an ARPA model (what KenLM computes)."""
    if (*context, word) in entries:
        return entries[(*context, word)][0]
    backoff = entries.get(tuple(context), (0.0, 0.0))[1] if context else 0.0
    return backoff + arpa_log10(entries, word, context[1:])


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_arpa_probabilities_equal_the_definitions_and_sum_to_one(tmp_path, order):
    write_arpa(kneser_ney(SENTENCES, order), tmp_path / "lm.arpa")
    entries = read_arpa(tmp_path / "lm.arpa")
    reference, vocabulary = reference_model(SENTENCES, order)
    assert entries[(BOS,)][0] == -99
    seen_contexts = {g[:-1] for g in entries if len(g) > 1}
    unseen_contexts = {("mat", "mat", "dog"), ("ran", "a"), (UNK,)}
    for context in sorted(seen_contexts | unseen_contexts | {()}):
        if len(context) >= order:
            continue
        probabilities = [10 ** arpa_log10(entries, w, context) for w in vocabulary]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-6), context
        for word, p in zip(vocabulary, probabilities):
            assert p == pytest.approx(reference(word, context), rel=1e-5), (context, word)  # 7 digits in the file
    # the continuation count at work: "dog" (4 times) follows three distinct words, "sat" (6 times) two, so in a
    # bigram model "dog" is the likelier unigram
    if order == 2:
        assert entries[("dog",)][0] > entries[("sat",)][0]


def test_kenlm_reads_the_file_and_scores_as_the_definitions(tmp_path):
    kenlm_module = pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    dictionary_module = pytest.importorskip("flashlight.lib.text.dictionary")
    order = 3
    write_arpa(kneser_ney(SENTENCES, order), tmp_path / "lm.arpa")
    reference, vocabulary = reference_model(SENTENCES, order)
    dictionary = dictionary_module.create_word_dict({w: [] for w in vocabulary})
    kenlm = kenlm_module.KenLM(str(tmp_path / "lm.arpa"), dictionary)
    for sentence in (["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "sat"], ["mat", "the", "ran"]):
        state, total = kenlm.start(False), 0.0
        for word in sentence:
            state, score = kenlm.score(state, dictionary.get_index(word))
            total += score
        _, end = kenlm.finish(state)
        total += end
        context, expected = [BOS], 0.0
        for word in [*sentence, EOS]:
            expected += math.log10(reference(word, tuple(context)))
            context.append(word)
        assert total == pytest.approx(expected, abs=1e-4), sentence


def test_command_line_from_a_text_file(tmp_path):
    (tmp_path / "text.txt").write_text("The cat, sat.\n\nthe DOG sat\n")
    main(["--text", str(tmp_path / "text.txt"), "--order", "2", "--output", str(tmp_path / "lm.arpa")])
    entries = read_arpa(tmp_path / "lm.arpa")
    assert {g for g in entries if len(g) == 1} == {(w,) for w in (BOS, EOS, UNK, "the", "cat", "sat", "dog")}
    assert set(itertools.chain.from_iterable(entries)) == {BOS, EOS, UNK, "the", "cat", "sat", "dog"}
