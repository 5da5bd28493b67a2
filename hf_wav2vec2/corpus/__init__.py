"""The default corpus: English speech synthesised with espeak-ng, written in the LibriSpeech layout.

    python -m hf_wav2vec2.corpus --output_dir data/default_corpus   # 6 voices; 45 min train, 7 min dev, 7 min test
    python -m hf_wav2vec2.corpus --output_dir DIR --num_speakers 4 --utterances_per_split 40,8,8 --seed 1

writes

    DIR/LibriSpeech/{train-clean,dev-clean,test-clean}/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
                                                         .../<speaker>-<chapter>.trans.txt
                                                         .../<speaker>-<chapter>-<utt>.phones.tsv
    DIR/LibriSpeech/SPEAKERS.TXT, DIR/LibriSpeech/corpus.json (every setting, per-speaker voice, totals)

which ``hf_wav2vec2.data.load_speech_dataset("DIR", split="train-clean")`` reads. Audio is 16 kHz mono 16-bit FLAC.
Speakers are espeak voices and variants (US, British, Scottish, Caribbean ... male and female) with their own
speaking rate, pitch and intonation range, varied a little per utterance. Sentences come from ``sentences.txt``
(King James Bible clauses with a 400-word vocabulary, see ``make_sentences.py``). Every speaker appears in every
split; dev and test use sentences never used in train, chosen so that all their words occur in the train sentences
(closed vocabulary).

``*.phones.tsv`` holds the phoneme timings espeak reports, one ``start_s<TAB>end_s<TAB>phone`` line per phone
(:func:`read_phones`), with espeak's ASCII phoneme mnemonics, stress marks removed and pauses as "sil": for checking
which phones the quantizer's codes stand for (paper Fig. 3).

Modules: ``espeak`` (a ctypes binding to libespeak-ng, loaded on first use), ``synth`` (the generator, phone
timings), ``make_sentences`` (how ``sentences.txt`` was made; not needed at run time). This package may import
from ``hf_wav2vec2.data`` (transcript normalisation); the data layer never imports it. Problems are logged on the
"hf_wav2vec2.corpus" logger.
"""

from .synth import read_phones, synthesize_corpus

__all__ = ["read_phones", "synthesize_corpus"]
