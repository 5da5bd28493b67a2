"""WER and CER as ``evaluate`` metrics shipped with the package, so that they load with no network.

``evaluate.load("wer")`` fetches its script from the Hub; ``load_metric("wer")`` loads ours from
``hf_wav2vec2/metrics/wer/wer.py`` instead (an ``evaluate.Metric`` subclass; same definition, corpus-level, jiwer's
alignment). ``evaluate.load(metric_path("cer"))`` is the same thing spelled with evaluate's own call.
"""

from __future__ import annotations

import os

METRICS = ("wer", "cer")
_HERE = os.path.dirname(os.path.abspath(__file__))


def metric_path(name: str) -> str:
    """Folder of a shipped metric script: what ``evaluate.load`` takes."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; shipped metrics: {METRICS}")
    return os.path.join(_HERE, name)


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of a shipped metric (``"wer"`` or ``"cer"``); works offline. ``kwargs`` go to
    ``evaluate.load`` (e.g. ``experiment_id``)."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


__all__ = ["METRICS", "load_metric", "metric_path"]
