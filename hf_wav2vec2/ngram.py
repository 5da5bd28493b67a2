"""A word n-gram language model from transcripts: interpolated modified Kneser-Ney, written as an ARPA file.

The paper decodes with a 4-gram trained on the LibriSpeech LM corpus (section 4.4); KenLM's ``lmplz`` builds such
models, but it is a C++ program that no pip wheel carries. This module estimates the same kind of model in plain
Python, in memory (fine for the transcripts of a labelled set; the 8.5k words of the default corpus take under a
second; use ``lmplz`` for a corpus of hundreds of millions of words), so that ``evaluate_ctc.py --kenlm`` and the
pipeline can decode with an LM made from a dataset's own training transcripts:

    python -m hf_wav2vec2.ngram --dataset_name data/default_corpus/LibriSpeech --train_split_name train-clean \\
        --model runs/ctc-tiny --order 4 --output runs/lm/train-clean-4gram.arpa
    python -m hf_wav2vec2.ngram --text corpus.txt --model runs/ctc-tiny --output lm.arpa   # one sentence per line

Text never seen by the evaluation must be used: the default corpus keeps dev and test sentences out of train-clean.

The estimate follows Chen & Goodman (1998) as ``lmplz`` does (Heafield et al. 2013): each sentence is ``<s> w1 ...
wk </s>``; the highest order keeps raw counts, a lower order counts the distinct words that precede an n-gram
(its continuation count), except for n-grams that start with ``<s>``, which cannot be extended to the left; three
discounts per order come from the counts of counts; every order is interpolated with the one below it, and the
unigrams with the uniform distribution over the vocabulary (``</s>`` and ``<unk>`` included). In the ARPA file an
n-gram's probability is the interpolated one and a context's backoff weight is its interpolation weight, so that
backing off gives exactly the interpolated probability of every unseen word.
"""

from __future__ import annotations

import argparse
import collections
import logging
import math
import os
from collections.abc import Iterable, Sequence

logger = logging.getLogger("hf_wav2vec2.ngram")

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
NO_PROBABILITY = -99.0
"""log10 probability of ``<s>`` in an ARPA file: it starts every sentence and is never predicted (KenLM's value)."""
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def count_ngrams(sentences: Iterable[Sequence[str]], order: int) -> list[collections.Counter]:
    """Raw counts of the n-grams of every sentence (``<s>`` + words + ``</s>``), for n = 1 .. ``order``:
    ``counts[n - 1][ngram]``. An n-gram near the start is shorter when ``<s>`` begins it (``(<s>, w1)`` is a bigram;
    there is no ``(<s>, <s>, w1)``)."""
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    counts = [collections.Counter() for _ in range(order)]
    for words in sentences:
        padded = (BOS, *words, EOS)
        for end in range(1, len(padded)):
            for n in range(1, min(order, end + 1) + 1):
                counts[n - 1][padded[end - n + 1 : end + 1]] += 1
    return counts


def adjusted_counts(raw: list[collections.Counter]) -> list[collections.Counter]:
    """Kneser-Ney's counts: raw for the highest order and for n-grams that start with ``<s>``; otherwise the number
    of distinct words seen just before the n-gram (its continuation count)."""
    adjusted = [collections.Counter() for _ in raw]
    adjusted[-1] = collections.Counter(raw[-1])
    for n in range(len(raw) - 1):
        for ngram in raw[n + 1]:
            adjusted[n][ngram[1:]] += 1
        for ngram, count in raw[n].items():
            if ngram[0] == BOS:
                adjusted[n][ngram] = count
    return adjusted


def discounts(counts: collections.Counter) -> tuple[float, float, float]:
    """The modified Kneser-Ney discounts D(1), D(2), D(3+) of one order from its counts of counts t_k (Chen &
    Goodman's estimate): Y = t1 / (t1 + 2 t2), D(k) = k - (k + 1) Y t_{k+1} / t_k. Where a t_k (k = 1..4) is 0 or a
    D(k) leaves (0, k), as happens on tiny texts, the discounts are ``lmplz --discount_fallback``'s (0.5, 1, 1.5)."""
    t = collections.Counter(min(count, 4) for count in counts.values())
    if all(t[k] for k in (1, 2, 3, 4)):
        y = t[1] / (t[1] + 2 * t[2])
        estimate = tuple(k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3))
        if all(0 < d < k for d, k in zip(estimate, (1, 2, 3))):
            return estimate
    return FALLBACK_DISCOUNTS


def kneser_ney(sentences: Iterable[Sequence[str]], order: int = 4) -> list[dict[tuple[str, ...], tuple[float, float]]]:
    """Estimate an interpolated modified Kneser-Ney model. Returns, per order n = 1 .. ``order``, ``{ngram:
    (log10 p(w | h), log10 backoff(ngram))}`` with p the interpolated probability and backoff the interpolation
    weight of the n-gram as a context (0.0 when it is never one), as an ARPA file stores them."""
    adjusted = adjusted_counts(count_ngrams(sentences, order))
    vocabulary = {ngram[0] for ngram in adjusted[0]} | {EOS, UNK}

    # per context h of each order: sum of counts, and the interpolation weight gamma(h) = sum of discounts / sum
    order_discounts, totals, gammas = [], [], []
    for counts in adjusted:
        d = discounts(counts)
        total, discounted = collections.Counter(), collections.Counter()
        for ngram, count in counts.items():
            total[ngram[:-1]] += count
            discounted[ngram[:-1]] += d[min(count, 3) - 1]
        order_discounts.append(d)
        totals.append(total)
        gammas.append({context: discounted[context] / total[context] for context in total})

    probabilities: list[dict[tuple[str, ...], float]] = []
    for n, counts in enumerate(adjusted):
        d, total = order_discounts[n], totals[n]
        lower = probabilities[n - 1] if n else None
        current = {}
        for ngram, count in counts.items():
            context = ngram[:-1]
            backed_off = lower[ngram[1:]] if lower is not None else 1.0 / len(vocabulary)
            current[ngram] = (count - d[min(count, 3) - 1]) / total[context] + gammas[n][context] * backed_off
        if n == 0:  # <unk> and anything with no count get the uniform share only
            for word in vocabulary:
                current.setdefault((word,), gammas[0][()] / len(vocabulary))
        probabilities.append(current)

    model = []
    for n, current in enumerate(probabilities):
        as_context = gammas[n + 1] if n + 1 < order else {}
        entries = {ngram: (math.log10(p), math.log10(as_context[ngram]) if ngram in as_context else 0.0)
                   for ngram, p in current.items()}
        if n == 0:
            entries[(BOS,)] = (NO_PROBABILITY, math.log10(as_context[(BOS,)]) if (BOS,) in as_context else 0.0)
        model.append(entries)
    return model


def write_arpa(model: list[dict[tuple[str, ...], tuple[float, float]]], path: str | os.PathLike) -> None:
    """Write :func:`kneser_ney`'s model as an ARPA file (sorted n-grams; backoff written where it is not 0)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\\data\\\n")
        for n, entries in enumerate(model, start=1):
            handle.write(f"ngram {n}={len(entries)}\n")
        for n, entries in enumerate(model, start=1):
            handle.write(f"\n\\{n}-grams:\n")
            for ngram in sorted(entries):
                logp, backoff = entries[ngram]
                line = f"{logp:.7g}\t{' '.join(ngram)}"
                handle.write(line + (f"\t{backoff:.7g}\n" if backoff != 0.0 else "\n"))
        handle.write("\n\\end\\\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    # the transformers examples' option names, as in the training scripts (the earlier ones still work)
    source.add_argument("--dataset_name", "--dataset", help="speech dataset whose transcripts to use (anything "
                                                            "evaluate_ctc.py reads)")
    source.add_argument("--text", help="a text file, one sentence per line")
    parser.add_argument("--train_split_name", "--split", help="the dataset's split (e.g. train-clean); never the one "
                                                              "you evaluate on")
    parser.add_argument("--dataset_config_name", "--hub_config", help="the dataset's configuration (Common Voice's "
                                                                      "language, ...)")
    parser.add_argument("--text_column_name", "--text_column", help="the dataset's transcript column (default: "
                                                                    "auto-detected)")
    parser.add_argument("--model", help="write the text as this model's labels are written (its processor's "
                                        "normalisation); default: the dataset's usual normalisation")
    parser.add_argument("--order", type=int, default=4)
    parser.add_argument("--output", required=True, help="the ARPA file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from .data import TextNormalizer
    from .data.ctc import processor_normalizer

    normalizer = None
    if args.model is not None:
        from transformers import AutoProcessor

        normalizer = processor_normalizer(AutoProcessor.from_pretrained(args.model))
    if args.text is not None:
        normalize = normalizer or TextNormalizer()
        with open(args.text, encoding="utf-8") as handle:
            lines = [normalize(line) for line in handle]
    else:
        from .data import load_speech_dataset

        dataset = load_speech_dataset(args.dataset_name, split=args.train_split_name,
                                      hub_config=args.dataset_config_name, text_column=args.text_column_name,
                                      normalizer=normalizer)
        lines = dataset["text"]
    sentences = [line.split() for line in lines if line.strip()]
    if not sentences:
        raise SystemExit(f"no text in {args.text or args.dataset_name}")
    model = kneser_ney(sentences, args.order)
    write_arpa(model, args.output)
    logger.info("%d sentences, %d words, %s n-grams -> %s", len(sentences), sum(map(len, sentences)),
                "/".join(str(len(entries)) for entries in model), args.output)


if __name__ == "__main__":
    main()
