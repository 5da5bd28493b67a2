"""CTC fine-tuning data: the character vocabulary, the processor, and the collator that turns utterances into
padded batches with labels.

The vocabulary comes from the data: every character of the normalised training transcripts.

    [PAD] = 0   the CTC blank, also the padding token (``config.pad_token_id = 0``)
    [UNK] = 1   characters the training transcripts never contained
    |     = 2   word delimiter (the tokenizer writes a space as ``|``)
    then every other character of the normalised training transcripts, sorted by code point (LibriSpeech style:
    ``'`` then ``A``..``Z``, section 4 of the paper; French adds ``à``, ``é``, ...; Hindi adds the consonants and,
    as tokens of their own, the vowel signs and virama that NFC keeps as separate code points)

The normalisation (:class:`~hf_wav2vec2.data.text.TextNormalizer`) is part of the processor: :func:`build_processor`
stores it in the tokenizer's config (``tokenizer_config.json``, key ``text_normalization``), so it is saved with the
processor in every checkpoint and output folder, and :func:`processor_normalizer` reads it back for the collator's
labels, for training's dev/test scoring and for ``evaluate_ctc.py``. Transcripts are passed through it before
tokenisation (``load_speech_dataset`` already did; doing it again is a no-op), so vocabulary building, labels and
references for WER see the same text.

Bad examples never reach the model; each is logged on the "hf_wav2vec2.data" logger and counted in
``CTCCollator.report``:

* unusable audio (``example_waveform``: undecodable, NaN/inf samples, or shorter than ``min_samples``; logged with
  its name);
* empty transcripts (nothing to learn; the CTC loss of an empty target only teaches "blank");
* CTC-infeasible examples: a CTC path for ``y`` needs ``len(y) + r`` frames, ``r`` the number of adjacent repeated
  labels (a blank must separate them). Fewer output frames give an infinite loss.

Characters outside the vocabulary are **mapped to [UNK]**, with a warning the first time each one is seen: the rest
of the transcript still trains the model, and an evaluation set keeps all its utterances (dropping them would
change the test set). After normalisation this only happens for characters the training set never had.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

from ..configuration import SAMPLING_RATE
from .audio import AudioError, example_waveform
from .text import LIBRISPEECH, TextNormalizer

logger = logging.getLogger("hf_wav2vec2.data")

BLANK_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
WORD_DELIMITER = "|"
SPECIAL_TOKENS = (BLANK_TOKEN, UNK_TOKEN, WORD_DELIMITER)  # ids 0, 1, 2


# ----------------------------------------------------------------------------------------------- vocabulary
def build_vocabulary(transcripts: Iterable[str], normalizer: TextNormalizer | None = LIBRISPEECH) -> dict[str, int]:
    """``{token: id}``: [PAD]=0 (blank), [UNK]=1, ``|``=2, then the characters of the transcripts normalised by
    ``normalizer`` (None: they already are, as ``load_speech_dataset(normalizer=...)`` writes them), sorted by code
    point. The same transcripts give the same vocabulary on any machine.

    The default normaliser is LibriSpeech's English one; pass ``TextNormalizer()`` (or the one the data was loaded
    with) for any other language, and give :func:`build_processor` the same one."""
    characters = set()
    for text in transcripts:
        characters.update((normalizer(text) if normalizer is not None else text).replace(" ", ""))
    vocabulary = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for character in sorted(characters):
        vocabulary[character] = len(vocabulary)
    return vocabulary


def build_feature_extractor(normalize: bool) -> Wav2Vec2FeatureExtractor:
    """transformers' ``Wav2Vec2FeatureExtractor`` for our models: 16 kHz mono, zero mean / unit variance per
    utterance only when ``normalize`` (fairseq's ``normalize``: layer-norm encoders, ``feat_extract_norm="layer"``;
    group-norm models see raw audio), and always the attention mask: our group-norm encoder takes its statistics over
    real samples only, so a padded batch gives the same outputs as the items alone (unlike transformers' BASE
    models, which therefore ship ``return_attention_mask=False``). Fine-tuning, pretraining and fairseq-converted
    folders all carry this one."""
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0,
                                    do_normalize=normalize, return_attention_mask=True)


def build_processor(vocabulary: Mapping[str, int], *, normalizer: TextNormalizer = LIBRISPEECH,
                    feat_extract_norm: str = "group") -> Wav2Vec2Processor:
    """transformers' ``Wav2Vec2Processor`` (what ``pipeline("automatic-speech-recognition")`` and the Trainer use)
    for a vocabulary from :func:`build_vocabulary`, with ``normalizer`` (the one the vocabulary was built with)
    stored in the tokenizer's config (see the module docstring).

    The feature extractor is :func:`build_feature_extractor`, normalising for layer-norm encoders only.
    """
    if feat_extract_norm not in ("group", "layer"):
        raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {feat_extract_norm!r}")
    if vocabulary.get(BLANK_TOKEN) != 0:
        raise ValueError(f"the vocabulary must map the CTC blank {BLANK_TOKEN} to id 0, "
                         f"got {vocabulary.get(BLANK_TOKEN)}")
    with tempfile.TemporaryDirectory() as folder:
        vocab_file = os.path.join(folder, "vocab.json")
        with open(vocab_file, "w", encoding="utf-8") as handle:
            json.dump(dict(vocabulary), handle, ensure_ascii=False)
        # No <s> / </s>: CTC uses neither, and adding them would make len(tokenizer) exceed the CTC head's size.
        tokenizer = Wav2Vec2CTCTokenizer(vocab_file, unk_token=UNK_TOKEN, pad_token=BLANK_TOKEN,
                                         word_delimiter_token=WORD_DELIMITER, bos_token=None, eos_token=None,
                                         do_lower_case=False, text_normalization=normalizer.to_dict())
    return Wav2Vec2Processor(feature_extractor=build_feature_extractor(feat_extract_norm == "layer"),
                             tokenizer=tokenizer)


def processor_normalizer(processor) -> TextNormalizer:
    """The transcript normalisation a model was trained with: the ``text_normalization`` stored by
    :func:`build_processor` in the tokenizer's config (``processor`` may be a processor or its tokenizer).

    Processors saved without it (official checkpoints, other toolkits) get a guess from their vocabulary, logged:
    LibriSpeech's style when every character is one of A-Z and the apostrophe (facebook/wav2vec2-base-960h and its
    kin), else the ``unicode`` style with the case of the vocabulary's letters (``upper``, ``lower``, or ``keep``
    when both occur)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    stored = tokenizer.init_kwargs.get("text_normalization")
    if stored is not None:
        return TextNormalizer.from_dict(stored)
    special = set(tokenizer.all_special_tokens) | {getattr(tokenizer, "word_delimiter_token", None)}
    characters = "".join(token for token in tokenizer.get_vocab() if token not in special)
    if set(characters) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ'"):
        normalizer = LIBRISPEECH
    else:
        has_lower, has_upper = characters != characters.upper(), characters != characters.lower()
        case = "keep" if has_lower and has_upper else "upper" if has_upper else "lower"
        normalizer = TextNormalizer(case=case)
    logger.warning("the processor does not say how its transcripts were normalised (no text_normalization in "
                   "tokenizer_config.json): guessed from its vocabulary: %s", normalizer.describe())
    return normalizer


def set_processor_normalizer(processor, normalizer: TextNormalizer) -> None:
    """Store ``normalizer`` in the processor's tokenizer config, so that ``save_pretrained`` writes it."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.init_kwargs["text_normalization"] = normalizer.to_dict()


def ctc_required_frames(labels: Sequence[int]) -> int:
    """Fewest output frames a CTC alignment of ``labels`` needs: one per label plus a blank between each pair of
    equal adjacent labels (``"LL"`` in ``HELLO`` needs L, blank, L)."""
    repeats = sum(1 for previous, current in zip(labels, labels[1:]) if previous == current)
    return len(labels) + repeats


# ------------------------------------------------------------------------------------------------ collator
@dataclass
class CTCReport:
    """What a :class:`CTCCollator` (or :func:`filter_ctc_dataset`) dropped or changed, and why. With DataLoader
    workers each worker counts its own batches; the log lines are the complete record."""

    dropped: Counter = field(default_factory=Counter)  # reason -> count: "audio", "empty", "infeasible"
    unknown_characters: Counter = field(default_factory=Counter)  # character -> occurrences mapped to [UNK]
    examples: int = 0  # examples seen
    batches: int = 0
    empty_batches: int = 0  # batches where nothing was usable (the collator returned None)


@dataclass
class CTCCollator:
    """Pads audio and labels of CTC examples into a batch for ``W2V2ForCTC``.

    Each example is a mapping with ``text`` and either ``input_values`` (1-D float waveform at 16 kHz, as
    ``AudioDataset`` returns) or ``path`` / ``audio`` (rows of ``load_speech_dataset``, decoded here); None
    examples (``AudioDataset``'s undecodable files) are dropped.

    Args:
        processor: from :func:`build_processor`; its feature extractor pads (and normalises for layer-norm models),
            its tokenizer turns text into labels after the processor's normalisation (:func:`processor_normalizer`).
        frames_of: the model's samples -> frames arithmetic (``model.num_frames``), for the CTC feasibility check
            (audio too short for its labels, including audio shorter than the receptive field, is dropped by it).
        min_samples: shorter audio is dropped (counted under "audio"); pass the model's receptive field
            (``config.receptive_field``). The default, 1, only drops empty audio.
        pad_to_multiple_of: round the padded audio length up to a multiple of this.
        return_ids: add ``"ids"`` (utterance ids) and ``"num_samples"`` (real samples), host lists of the kept
            examples, for a stage keyed by utterance (``CTCTrainer``'s feature cache).
        text_normalized: the examples' ``text`` is already written by the processor's normaliser (as
            ``load_speech_dataset(normalizer=...)`` writes it, once per utterance at load): labels only tokenise it.

    Returns ``{"input_values": (B, L) float32, "attention_mask": (B, L) long, "labels": (B, U) long}`` with labels
    padded by -100, or **None when no example of the batch is usable** (counted in ``report.empty_batches``), as
    ``PretrainingCollator`` does. ``CTCTrainer`` turns None into a zero-loss placeholder batch, so that a
    distributed run stays in step instead of crashing or hanging.
    """

    processor: Wav2Vec2Processor
    frames_of: Callable[[int], int]
    min_samples: int = 1
    pad_to_multiple_of: int | None = None
    return_ids: bool = False
    text_normalized: bool = False
    report: CTCReport = field(default_factory=CTCReport)

    def __post_init__(self):
        vocabulary = self.processor.tokenizer.get_vocab()
        if vocabulary.get(BLANK_TOKEN, vocabulary.get(self.processor.tokenizer.pad_token)) != 0:
            raise ValueError("the tokenizer's pad token (the CTC blank) must have id 0")
        self._characters = set(vocabulary) - {BLANK_TOKEN, UNK_TOKEN}
        self.normalizer = processor_normalizer(self.processor)
        self._sampling_rate = self.processor.feature_extractor.sampling_rate

    def __call__(self, examples: Sequence[Mapping | None]) -> dict[str, torch.Tensor] | None:
        self.report.batches += 1
        waveforms, labels, ids = [], [], []
        for example in examples:
            self.report.examples += 1
            usable = self._example(example)
            if usable is not None:
                waveforms.append(usable[0])
                labels.append(usable[1])
                ids.append(_name(example))
        if not waveforms:
            self.report.empty_batches += 1
            logger.warning("no usable example in a batch of %d: returning None", len(examples))
            return None

        # 1. audio: zero padding, attention mask, per-utterance normalisation for layer-norm models
        batch = self.processor.feature_extractor(
            waveforms, sampling_rate=self._sampling_rate, padding=True, pad_to_multiple_of=self.pad_to_multiple_of,
            return_attention_mask=True, return_tensors="pt",
        )
        # 2. labels padded with -100 (ignored by the CTC loss and by the Trainer's token counts)
        padded = torch.full((len(labels), max(len(y) for y in labels)), -100, dtype=torch.long)  # (B, U)
        for row, y in enumerate(labels):
            padded[row, : len(y)] = torch.tensor(y, dtype=torch.long)
        out = {"input_values": batch["input_values"].float(), "attention_mask": batch["attention_mask"].long(),
               "labels": padded}
        if self.return_ids:
            out.update(ids=ids, num_samples=[len(w) for w in waveforms])
        return out

    def labels(self, text: str) -> list[int]:
        """Token ids of a transcript (normalised first by the processor's normaliser, unless ``text_normalized``);
        unknown characters become [UNK], with a warning the first time each one is seen."""
        if not self.text_normalized:
            text = self.normalizer(text)
        for character in set(text.replace(" ", "")) - self._characters:
            if character not in self.report.unknown_characters:
                logger.warning("character %r is not in the vocabulary: mapped to %s", character, UNK_TOKEN)
            self.report.unknown_characters[character] += text.count(character)
        return self.processor.tokenizer(text).input_ids

    def usable_labels(self, name: str, text: str, num_samples: int) -> list[int] | None:
        """The labels of a transcript for ``num_samples`` of audio, or None (logged, counted in the report) when
        the transcript is empty or CTC-infeasible: its labels need more frames (:func:`ctc_required_frames`) than the
        audio gives."""
        labels = self.labels(text or "")
        if not labels:
            self.report.dropped["empty"] += 1
            logger.warning("dropping %s: empty transcript", name)
            return None
        frames, needed = int(self.frames_of(num_samples)), ctc_required_frames(labels)
        if needed > frames:
            self.report.dropped["infeasible"] += 1
            logger.warning("dropping %s: CTC-infeasible, its %d labels need %d frames but %d samples give %d",
                           name, len(labels), needed, num_samples, frames)
            return None
        return labels

    def _example(self, example: Mapping | None) -> tuple[np.ndarray, list[int]] | None:
        """(waveform, labels) of a usable example; None (logged, counted) otherwise."""
        if example is None:  # AudioDataset has already logged the path
            self.report.dropped["audio"] += 1
            return None
        try:
            waveform = example_waveform(example, self._sampling_rate, min_samples=self.min_samples)
        except AudioError as error:
            self.report.dropped["audio"] += 1
            logger.warning("dropping %s: %s", error.source, error.reason)
            return None
        labels = self.usable_labels(_name(example), example.get("text"), len(waveform))
        return None if labels is None else (waveform, labels)


def _name(example: Mapping) -> str:
    return example.get("id") or example.get("path") or "<example>"


def filter_ctc_dataset(dataset, processor: Wav2Vec2Processor, frames_of: Callable[[int], int],
                       report: CTCReport | None = None, *, text_normalized: bool = False):
    """Drop the rows of a ``load_speech_dataset`` dataset that :class:`CTCCollator` would drop, from the
    ``text`` and ``num_samples`` columns alone (no decoding): empty transcripts and CTC-infeasible utterances.
    Each is logged; counts go to ``report``. Run before training so that batches keep their planned size."""
    report = report if report is not None else CTCReport()
    collator = CTCCollator(processor, frames_of, report=report, text_normalized=text_normalized)
    keep = [index for index, (utt_id, text, samples)
            in enumerate(zip(dataset["id"], dataset["text"], dataset["num_samples"]))
            if collator.usable_labels(utt_id, text, samples) is not None]
    return dataset.select(keep) if len(keep) < len(dataset) else dataset
