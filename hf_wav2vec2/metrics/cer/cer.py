"""Character error rate as an ``evaluate`` metric that loads offline: ``evaluate.load("hf_wav2vec2/metrics/cer")``.

CER = (S + D + I) / N over characters, summed over the corpus. Each transcript has its surrounding and repeated
spaces removed first; the single spaces between words count as characters (as the Hub's ``cer`` metric and jiwer).
"""

import datasets
import evaluate
import jiwer

_DESCRIPTION = """Corpus-level character error rate: total character edits (S + D + I) over total reference
characters (N), spaces between words included."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of hypothesis transcripts (str).
    references: list of reference transcripts (str), one per prediction.
    concatenate_texts: score the corpus as one long utterance.
Returns:
    float: the CER (0.0 perfect).
Example:
    >>> evaluate.load("hf_wav2vec2/metrics/cer").compute(predictions=["AB"], references=["ABC"])
    0.3333333333333333
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CER(evaluate.Metric):
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
        def clean(texts):
            return [" ".join(text.split()) for text in texts]

        predictions, references = clean(predictions), clean(references)
        if concatenate_texts:
            predictions, references = [" ".join(predictions)], [" ".join(references)]
        out = jiwer.process_characters(references, predictions)
        errors = out.substitutions + out.deletions + out.insertions
        reference_chars = out.substitutions + out.deletions + out.hits
        return errors / reference_chars if reference_chars else float(errors > 0)
