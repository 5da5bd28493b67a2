"""CTC decoding of model outputs: greedy (best path) and beam search with a KenLM n-gram (flashlight-text).

- :func:`greedy_decode`: the argmax id of each frame, repeats collapsed, blanks dropped (what the pipeline and the
  Trainer's WER do).
- :class:`KenLMBeamSearchDecoder`: flashlight-text's lexicon decoder with a word n-gram (the lexicon is built from
  the LM's unigrams when none is given) or its lexicon-free decoder with a token-level (character) n-gram. ARPA,
  gzipped ARPA or KenLM binary files; KenLM is compiled into the flashlight-text wheel (``pip install
  "hf_wav2vec2[lm]"``), no other package is needed.
- :func:`output_frame_lengths`: the real frames of each item of a padded batch, the frames the decoders read;
  :func:`blank_padded_frames`: the frames past them made certain blanks.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .frames import frame_mask

logger = logging.getLogger("hf_wav2vec2.decoding")

LM_SPECIAL_WORDS = ("<s>", "</s>", "<unk>")


# ---------------------------------------------------------------------------------------------------- greedy
def greedy_decode(token_ids: torch.Tensor | np.ndarray, tokenizer,
                  frame_lengths: torch.Tensor | None = None) -> list[str]:
    """Best path decoding. token_ids: (B, T) per-frame ids, the argmax of the logits; negative ids (the Trainer's
    -100 padding across batches) count as the blank. frame_lengths: (B,) real frames, the frames at or past them are
    ignored (None: all T). The tokenizer (``Wav2Vec2CTCTokenizer``) collapses repeats, drops the blank (its pad
    token) and maps ``|`` to a space."""
    ids = torch.as_tensor(token_ids).cpu()  # (B, T)
    ids = ids.masked_fill(ids < 0, tokenizer.pad_token_id)
    frame_lengths = frame_lengths.tolist() if frame_lengths is not None else [ids.shape[1]] * ids.shape[0]
    return tokenizer.batch_decode([row[:n].tolist() for row, n in zip(ids, frame_lengths)])


# The log-probability of every token but the blank on a padded frame: far below any real one, and finite, so that a
# beam search adds it safely (and it fits bf16).
NOT_BLANK = -1e4


def blank_padded_frames(logits: torch.Tensor, frame_lengths: torch.Tensor, blank: int) -> torch.Tensor:
    """(B, T, V) logits with every frame at or past ``frame_lengths[b]`` (B,) made a certain blank (0 for the blank,
    :data:`NOT_BLANK` for every other token): the frames a padded batch computes past an utterance's end decode as
    nothing, greedy or with a beam search, instead of being read as speech."""
    padded = ~frame_mask(frame_lengths.to(logits.device), logits.shape[1])  # (B, T)
    certain_blank = torch.full_like(logits[0, 0], NOT_BLANK)  # (V,)
    certain_blank[blank] = 0.0
    return torch.where(padded[..., None], certain_blank, logits)


def output_frame_lengths(model, outputs, sample_lengths: torch.Tensor | None) -> torch.Tensor:
    """(B,) real frames of each item of a CTC model's ``outputs``; the frames past them come from padding and
    decode as blank. Our ``W2V2ForCTC`` returns them (``outputs.frame_lengths``); for transformers'
    ``Wav2Vec2ForCTC`` they are its own samples -> frames arithmetic over ``sample_lengths``, the (B,) real samples
    of each item (None, not known: every item has all T frames)."""
    if getattr(outputs, "frame_lengths", None) is not None:
        return outputs.frame_lengths
    if sample_lengths is None:
        batch, t = outputs.logits.shape[:2]
        return torch.full((batch,), t, dtype=torch.long)
    return model._get_feat_extract_output_lengths(sample_lengths)


# -------------------------------------------------------------------------------------------- beam search + LM
def read_arpa_unigrams(path: str | os.PathLike) -> list[str]:
    """The words of the ``\\1-grams:`` section of an ARPA file (plain or .gz); reading stops after it."""
    words, inside = [], False
    with _open_maybe_gzipped(path, "rt", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if line == "\\1-grams:":
                inside = True
            elif inside and line.startswith("\\"):
                return words
            elif inside and line:
                fields = line.split()
                if len(fields) >= 2:
                    words.append(fields[1])
    if not inside:
        raise ValueError(f"{path}: no \\1-grams: section (not an ARPA file?)")
    return words


def is_arpa(path: str | os.PathLike) -> bool:
    """True for an ARPA file (plain or gzipped: it starts with ``\\data\\``), False for a KenLM binary."""
    with _open_maybe_gzipped(path, "rb") as handle:
        return handle.read(4096).lstrip().startswith(b"\\data\\")


def _open_maybe_gzipped(path: str | os.PathLike, mode: str, **kwargs):
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path, mode, **kwargs) if gzipped else open(path, mode, **kwargs)


def read_lexicon(path: str | os.PathLike) -> dict[str, list[list[str]] | None]:
    """A lexicon file, ``WORD t1 t2 ... |`` per line (flashlight / torchaudio format; a word may have several
    lines), or a word list, one word per line (e.g. LibriSpeech's ``librispeech-vocab.txt``). Words without a
    spelling map to None: :class:`KenLMBeamSearchDecoder` spells them from their letters."""
    lexicon: dict[str, list[list[str]] | None] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            word, *spelling = line.split() or [None]
            if word is None:
                continue
            if spelling:
                lexicon[word] = [*(lexicon.get(word) or []), spelling]
            else:
                lexicon.setdefault(word, None)
    return lexicon


class KenLMBeamSearchDecoder:
    """CTC beam search with a KenLM n-gram through flashlight-text.

    Word LM (default): flashlight's ``LexiconDecoder``. Words are spelled as tokens ending with the word delimiter
    (``T H E |``); ``lexicon`` is a file (:func:`read_lexicon`), a mapping word -> spellings (None: spell it), or None
    to spell every unigram of an ARPA LM. A word whose letters are not all tokens (either case) is left out.
    Token LM (``lexicon_free=True``, or an ARPA whose unigrams are all tokens): flashlight's ``LexiconFreeDecoder``;
    the word delimiter is the LM's word separator.

    Scores: ``am + lm_weight * lm + word_score * words (+ sil_score * delimiters)``; KenLM scores are log10.
    Options are fairseq's / torchaudio's (``beam_size``, ``beam_size_token`` = all tokens, ``beam_threshold`` 25).
    """

    def __init__(
        self,
        tokens: Sequence[str],
        kenlm_model: str | os.PathLike,
        *,
        lexicon: str | os.PathLike | Mapping | None = None,
        lexicon_free: bool | None = None,
        beam_size: int = 50,
        beam_size_token: int | None = None,
        beam_threshold: float = 25.0,
        lm_weight: float = 2.0,
        word_score: float = -1.0,
        unk_score: float = -math.inf,
        sil_score: float = 0.0,
        log_add: bool = False,
        blank_token: str = "[PAD]",
        word_delimiter_token: str = "|",
    ):
        try:
            from flashlight.lib.text.decoder import (
                CriterionType,
                LexiconDecoder,
                LexiconDecoderOptions,
                LexiconFreeDecoder,
                LexiconFreeDecoderOptions,
                SmearingMode,
                Trie,
            )
            from flashlight.lib.text.decoder.kenlm import KenLM
            from flashlight.lib.text.dictionary import Dictionary
        except ImportError as error:
            raise ImportError("beam search with a KenLM language model needs flashlight-text: pip install "
                              '".[lm]" in a clone of hf_wav2vec2 (or pip install flashlight-text)') from error
        kenlm_model = os.fspath(kenlm_model)
        if not os.path.isfile(kenlm_model):
            raise FileNotFoundError(f"{kenlm_model}: no such KenLM model file")
        self.tokens = list(tokens)
        for name, token in (("blank_token", blank_token), ("word_delimiter_token", word_delimiter_token)):
            if token not in self.tokens:
                raise ValueError(f"{name} {token!r} is not one of the tokens")
        self.blank = self.tokens.index(blank_token)
        self.delimiter = self.tokens.index(word_delimiter_token)
        self.word_delimiter_token = word_delimiter_token
        token_dict = Dictionary(self.tokens)
        beam_size_token = beam_size_token or len(self.tokens)

        unigrams = read_arpa_unigrams(kenlm_model) if lexicon is None and is_arpa(kenlm_model) else None
        if lexicon_free is None:
            specials = set(LM_SPECIAL_WORDS)
            lexicon_free = unigrams is not None and all(w in self.tokens for w in unigrams if w not in specials)
        self.lexicon_free = lexicon_free

        if lexicon_free:
            # 1. token LM: KenLM maps each token to its LM id (tokens the LM lacks, e.g. the blank, to <unk>)
            self.lm = KenLM(kenlm_model, token_dict)
            options = LexiconFreeDecoderOptions(
                beam_size=beam_size, beam_size_token=beam_size_token, beam_threshold=beam_threshold,
                lm_weight=lm_weight, sil_score=sil_score, log_add=log_add, criterion_type=CriterionType.CTC)
            self.decoder = LexiconFreeDecoder(options, self.lm, self.delimiter, self.blank, [])
            self.words = None
            return

        # 2. word LM: lexicon word -> token spellings, from a file, a mapping or the LM's unigrams
        if lexicon is None:
            if unigrams is None:
                raise ValueError(f"{kenlm_model} is a KenLM binary: pass a lexicon (a lexicon file or a word list, "
                                 "e.g. the LM's vocabulary), the unigrams cannot be read from a binary file")
            lexicon = dict.fromkeys(unigrams)
        elif not isinstance(lexicon, Mapping):
            lexicon = read_lexicon(lexicon)
        spellings = self._spell_lexicon(lexicon)
        if not spellings:
            raise ValueError("no lexicon word can be spelled with the tokens: check the LM's case and alphabet")
        # 3. word dictionary, LM, and the trie of spellings scored by each word's unigram LM score (smeared)
        self.words = Dictionary([*LM_SPECIAL_WORDS, *spellings])
        self.words.set_default_index(self.words.get_index("<unk>"))
        self.lm = KenLM(kenlm_model, self.words)
        trie = Trie(token_dict.index_size(), self.delimiter)
        start = self.lm.start(False)
        for word, word_spellings in spellings.items():
            word_index = self.words.get_index(word)
            _, score = self.lm.score(start, word_index)
            for spelling in word_spellings:
                trie.insert([token_dict.get_index(t) for t in spelling], word_index, score)
        trie.smear(SmearingMode.MAX)
        self.trie = trie  # the decoder keeps a reference to it; keep it alive with the decoder
        options = LexiconDecoderOptions(
            beam_size=beam_size, beam_size_token=beam_size_token, beam_threshold=beam_threshold, lm_weight=lm_weight,
            word_score=word_score, unk_score=unk_score, sil_score=sil_score, log_add=log_add,
            criterion_type=CriterionType.CTC)
        self.decoder = LexiconDecoder(options, trie, self.lm, self.delimiter, self.blank,
                                      self.words.get_index("<unk>"), [], False)

    @classmethod
    def from_tokenizer(cls, tokenizer, kenlm_model: str | os.PathLike, *, vocab_size: int | None = None,
                       **options) -> KenLMBeamSearchDecoder:
        """Tokens in id order from a ``Wav2Vec2CTCTokenizer`` (blank = its pad token, its word delimiter);
        ``vocab_size``: the model's logits count (default: ``len(tokenizer)``)."""
        size = vocab_size if vocab_size is not None else len(tokenizer)
        tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
        tokens = [t if t is not None else f"<id {i}>" for i, t in enumerate(tokens)]
        return cls(tokens, kenlm_model, blank_token=tokenizer.pad_token,
                   word_delimiter_token=tokenizer.word_delimiter_token, **options)

    def _spell_lexicon(self, lexicon: Mapping) -> dict[str, list[list[str]]]:
        """Spellings as token lists ending with the word delimiter; words that cannot be spelled are dropped."""
        vocabulary = set(self.tokens)
        spelled, skipped = {}, 0
        for word, given in lexicon.items():
            if word in LM_SPECIAL_WORDS:
                continue
            if given:
                good = [list(s) for s in given if all(t in vocabulary for t in s)]
                good = [s if s[-1] == self.word_delimiter_token else [*s, self.word_delimiter_token] for s in good]
            else:
                good = []
            if not good:
                letters = [self._token_for(ch, vocabulary) for ch in word]
                good = [[*letters, self.word_delimiter_token]] if all(letters) else []
            if good:
                spelled[word] = good
            else:
                skipped += 1
        if skipped:
            logger.info("lexicon: %d word(s) cannot be spelled with the tokens and are left out", skipped)
        return spelled

    @staticmethod
    def _token_for(char: str, vocabulary: set[str]) -> str | None:
        for candidate in (char, char.upper(), char.lower()):
            if candidate in vocabulary:
                return candidate
        return None

    def __call__(self, logits: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> list[str]:
        """logits: (B, T, V) (log-softmax is taken here, in fp32); frame_lengths: (B,) real frames. One string per
        item."""
        return [text for text, _, _ in self._decode(logits, frame_lengths)]

    def decode_with_word_frames(self, logits: torch.Tensor, lengths: torch.Tensor | None = None
                                ) -> list[tuple[str, list[tuple[str, tuple[int, int]]]]]:
        """Like ``__call__``, with the frames of each word: one ``(text, [(word, (first frame, end frame)), ...])``
        per item, the end exclusive (the frames of the word's first to last token on the best path)."""
        return [(text, word_frames) for text, word_frames, _ in self._decode(logits, lengths)]

    def decode_beams(self, logits, **_) -> list[tuple]:
        """pyctcdecode's ``BeamSearchDecoderCTC.decode_beams`` interface, which transformers' ASR pipeline calls on
        its ``decoder`` (``pipeline("automatic-speech-recognition", model=..., decoder=this)``). logits: (T, V)
        (an array or tensor). Returns the best beam only, as ``[(text, None, word frames, score, score)]``;
        decoding options are set when the decoder is built, so pyctcdecode's (``beam_width``, ...) are ignored."""
        ((text, word_frames, score),) = self._decode(torch.as_tensor(logits)[None])
        return [(text, None, word_frames, score, score)]

    def _decode(self, logits: torch.Tensor, lengths: torch.Tensor | None = None):
        """(text, word frames, score) of the best beam of each item."""
        if logits.shape[-1] != len(self.tokens):
            raise ValueError(f"logits have {logits.shape[-1]} classes but the decoder {len(self.tokens)} tokens")
        emissions = F.log_softmax(logits.detach().float(), dim=-1).cpu().contiguous()  # (B, T, V)
        batch, t, v = emissions.shape
        lengths = lengths.tolist() if lengths is not None else [t] * batch
        decoded = []
        for b in range(batch):
            # flashlight reads a (T, V) row-major float32 block at this address
            pointer = emissions.data_ptr() + b * emissions.stride(0) * emissions.element_size()
            best = self.decoder.decode(pointer, int(lengths[b]), v)[0]
            text = self._text(best)
            decoded.append((text, list(zip(text.split(), self._word_spans(best.tokens))), float(best.score)))
        return decoded

    def _word_spans(self, path) -> list[tuple[int, int]]:
        """(first, end) frames of each run of letters between word delimiters on a best path. flashlight's path has
        one entry per frame plus a sentinel at each end."""
        spans, first, end = [], None, None
        for frame, token in enumerate(list(path)[1:-1]):
            if token == self.delimiter and first is not None:
                spans.append((first, end))
                first = None
            elif token != self.delimiter and token != self.blank and 0 <= token < len(self.tokens):
                first = frame if first is None else first
                end = frame + 1
        if first is not None:
            spans.append((first, end))
        return spans

    def _text(self, result) -> str:
        if self.words is not None:
            return " ".join(self.words.get_entry(i) for i in result.words if i >= 0)
        ids = [i for i, _ in itertools.groupby(result.tokens) if i != self.blank and 0 <= i < len(self.tokens)]
        text = "".join(self.tokens[i] for i in ids).replace(self.word_delimiter_token, " ")
        return " ".join(text.split())
