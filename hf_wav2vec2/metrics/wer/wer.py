"""Word error rate as an ``evaluate`` metric that loads offline: ``evaluate.load("hf_wav2vec2/metrics/wer")``.

WER = (S + D + I) / N over the whole corpus: substitutions, deletions and insertions of the minimum word-level
edit alignment of each hypothesis to its reference, summed over utterances, divided by the number of reference
words. The alignment is jiwer's (the field's standard implementation), so values match the Hub's ``wer`` metric.
"""

import datasets
import evaluate
import jiwer

_DESCRIPTION = """Corpus-level word error rate: total word edits (S + D + I) over total reference words (N).
Words are whitespace-separated tokens; surrounding and repeated spaces are ignored."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of hypothesis transcripts (str).
    references: list of reference transcripts (str), one per prediction.
    concatenate_texts: score the corpus as one long utterance (alignment across utterance boundaries).
Returns:
    float: the WER (0.0 perfect; above 1.0 is possible with many insertions).
Example:
    >>> evaluate.load("hf_wav2vec2/metrics/wer").compute(predictions=["A B D"], references=["A B C"])
    0.3333333333333333
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string", id="sequence"),
                 "references": datasets.Value("string", id="sequence")}
            ),
            reference_urls=["https://en.wikipedia.org/wiki/Word_error_rate"],
        )

    def _compute(self, predictions=None, references=None, concatenate_texts=False):
        if concatenate_texts:
            predictions, references = [" ".join(predictions)], [" ".join(references)]
        out = jiwer.process_words(list(references), list(predictions))
        errors = out.substitutions + out.deletions + out.insertions
        reference_words = out.substitutions + out.deletions + out.hits
        return errors / reference_words if reference_words else float(errors > 0)
