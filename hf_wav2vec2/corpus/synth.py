"""The generator of the synthetic corpus: plan (speakers, sentences, per-utterance settings), synthesis of each
(split, speaker) shard in a fresh process, phone timings, transcripts and the summary.

See the package docstring (``hf_wav2vec2.corpus``) for the layout written and the command line.

Reproducible: the same seed and sizes give byte-identical files. espeak-ng carries state from one utterance to the
next, so each (split, speaker) shard is synthesised in a fresh process, in a fixed order, whatever ``num_workers``.
"""

import json
import logging
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np
import soundfile as sf
import soxr
from tqdm.auto import tqdm

from ..configuration import SAMPLING_RATE
from ..data.text import normalize_transcript

logger = logging.getLogger("hf_wav2vec2.corpus")

SPLITS = ("train-clean", "dev-clean", "test-clean")
# Ordered so that the first speakers have the most standard accents: a small --num_speakers stays easy to learn.
VOICES = (
    "en-us+m3", "en-us+f2", "en+m1", "en+f3", "en-us+m6", "en-gb-x-rp+f4",
    "en-gb-x-rp+m2", "en-us-nyc+f1", "en-029+m7", "en-gb-scotland+f5", "en-gb-x-gbclan+m4", "en+f1",
)
DEFAULT_UTTERANCES = (1000, 150, 150)


@dataclass(frozen=True)
class Speaker:
    speaker_id: int
    voice: str
    rate: int  # words per minute
    pitch: int  # espeak 0-100
    pitch_range: int  # espeak 0-100


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    split: str
    text: str  # as spoken: mixed case, with punctuation
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    seed: int  # libc rand for espeak, and the noise
    lead_s: float  # silence before and after the speech
    trail_s: float
    peak: float  # peak amplitude after scaling


def load_sentences(path: str | None = None) -> list[str]:
    """Sentences, one per line, ``#`` lines ignored; the shipped ``sentences.txt`` when ``path`` is None."""
    if path is None:
        text = resources.files(__package__).joinpath("sentences.txt").read_text(encoding="utf-8")
    else:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def plan_corpus(sentences: list[str], num_speakers: int, utterances_per_split: tuple[int, int, int], seed: int):
    """Speakers and every utterance's text and settings, all drawn from ``numpy.random.default_rng(seed)``.

    Train takes sentences in a seeded random order (repeating, with other speakers, only if it needs more than the
    pool holds); dev and test take unused sentences whose words all occur in train's, falling back to any unused
    sentence (logged) when there are too few. Utterance i of a split goes to speaker i mod num_speakers.
    """
    rng = np.random.default_rng(seed)
    speakers = [
        Speaker(101 + k, VOICES[k % len(VOICES)], int(rng.integers(145, 171)), int(rng.integers(35, 66)),
                int(rng.integers(40, 71)))
        for k in range(num_speakers)
    ]
    num_train, num_dev, num_test = utterances_per_split
    if num_dev + num_test >= len(sentences):
        raise ValueError(f"{num_dev + num_test} dev/test utterances need more than the {len(sentences)} sentences")
    order = [sentences[i] for i in rng.permutation(len(sentences))]
    unique_train = max(1, min(num_train, len(order) - num_dev - num_test))
    train_texts = [order[i % unique_train] for i in range(num_train)]
    train_words = {w for text in order[:unique_train] for w in normalize_transcript(text).split()}
    unused = order[unique_train:]
    closed = [t for t in unused if set(normalize_transcript(t).split()) <= train_words]
    if len(closed) < num_dev + num_test:
        logger.warning("only %d held-out sentences use train words alone; dev/test also get others", len(closed))
        closed += [t for t in unused if t not in set(closed)]
    texts = {SPLITS[0]: train_texts, SPLITS[1]: closed[:num_dev], SPLITS[2]: closed[num_dev : num_dev + num_test]}

    utterances = []
    for split_index, split in enumerate(SPLITS):
        counts = [0] * num_speakers
        for i, text in enumerate(texts[split]):
            k = i % num_speakers
            speaker = speakers[k]
            chapter = (split_index + 1) * 1000 + k
            utterances.append(
                Utterance(
                    utt_id=f"{speaker.speaker_id}-{chapter}-{counts[k]:04d}",
                    split=split,
                    text=text,
                    voice=speaker.voice,
                    rate=int(round(speaker.rate * rng.uniform(0.93, 1.07))),
                    pitch=int(np.clip(speaker.pitch + rng.integers(-4, 5), 0, 100)),
                    pitch_range=speaker.pitch_range,
                    seed=int(rng.integers(2**31)),
                    lead_s=round(float(rng.uniform(0.05, 0.3)), 3),
                    trail_s=round(float(rng.uniform(0.05, 0.3)), 3),
                    peak=round(float(rng.uniform(0.4, 0.9)), 3),
                )
            )
            counts[k] += 1
    return speakers, utterances


def clean_phones(phonemes, sample_rate: int, offset_s: float, duration_s: float) -> list[tuple[float, float, str]]:
    """espeak's ``(start_sample, end_sample, mnemonic)`` -> ``(start_s, end_s, phone)`` covering [0, duration_s].

    Stress marks (' ,) are dropped; pauses (``_``, ``_:``, ``_!``) become "sil"; ``;`` (a modifier espeak reports
    as an event of its own) is merged into the phone before it. The speech starts at ``offset_s``; the silences
    before and after it are "sil" too. Consecutive "sil" are merged, empty intervals dropped, and the result tiles
    [0, duration_s] without gaps or overlaps.
    """
    intervals = [(0.0, offset_s, "sil")]
    for start, end, name in phonemes:
        name = name.lstrip("',")
        name = "sil" if not name or name.startswith("_") else name
        start, end = offset_s + start / sample_rate, offset_s + end / sample_rate
        if name == ";" and intervals:
            intervals[-1] = (intervals[-1][0], end, intervals[-1][2])
        else:
            intervals.append((start, end, name))
    intervals.append((intervals[-1][1], duration_s, "sil"))
    phones: list[tuple[float, float, str]] = []
    for start, end, name in intervals:
        if phones:
            # espeak may start the first phone a little after the synthesis starts (a gap that is silence in the
            # audio): the interval before absorbs it, so the phones tile [0, duration_s] without gaps.
            if start > phones[-1][1]:
                phones[-1] = (phones[-1][0], start, phones[-1][2])
            start = phones[-1][1]
        if end <= start:
            continue
        if phones and name == "sil" and phones[-1][2] == "sil":
            phones[-1] = (phones[-1][0], end, "sil")
        else:
            phones.append((start, end, name))
    return phones


def read_phones(path: str) -> list[tuple[float, float, str]]:
    """The ``(start_s, end_s, phone)`` intervals of a ``*.phones.tsv`` file."""
    with open(path, encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    return [(float(start), float(end), phone) for start, end, phone in rows]


def _synthesize_shard(job: tuple[str, list[Utterance], float]) -> list[dict]:
    """Synthesise and write one (split, speaker) shard, in order; runs in a fresh process (see module docstring)."""
    from .espeak import SynthesisError, get_synthesizer

    split_dir, utterances, noise_level = job
    synthesizer = get_synthesizer()
    results = []
    for utt in utterances:
        speaker, chapter, _ = utt.utt_id.split("-")
        folder = os.path.join(split_dir, speaker, chapter)
        os.makedirs(folder, exist_ok=True)
        try:
            waveform, phonemes = synthesizer.synthesize(utt.text, utt.voice, rate=utt.rate, pitch=utt.pitch,
                                                        pitch_range=utt.pitch_range, seed=utt.seed)
        except SynthesisError as error:
            results.append({"utt_id": utt.utt_id, "error": str(error)})
            continue
        # espeak speaks at 22.05 kHz; resampling keeps the phone times (in seconds) valid.
        speech = soxr.resample(waveform, synthesizer.sample_rate, SAMPLING_RATE, quality="HQ")
        speech *= utt.peak / max(float(np.abs(speech).max()), 1e-6)
        lead, trail = round(utt.lead_s * SAMPLING_RATE), round(utt.trail_s * SAMPLING_RATE)
        audio = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(trail, np.float32)])
        # A faint noise floor (about -60 dBFS): real recordings never hold exact digital silence.
        audio += noise_level * np.random.default_rng(utt.seed).standard_normal(len(audio)).astype(np.float32)
        sf.write(os.path.join(folder, f"{utt.utt_id}.flac"), np.clip(audio, -1.0, 1.0), SAMPLING_RATE,
                 format="FLAC", subtype="PCM_16")
        duration = len(audio) / SAMPLING_RATE
        phones = clean_phones(phonemes, synthesizer.sample_rate, lead / SAMPLING_RATE, duration)
        with open(os.path.join(folder, f"{utt.utt_id}.phones.tsv"), "w", encoding="utf-8") as handle:
            handle.writelines(f"{start:.4f}\t{end:.4f}\t{phone}\n" for start, end, phone in phones)
        results.append({"utt_id": utt.utt_id, "duration": duration, "num_phones": len(phones),
                        "espeak": synthesizer.version})
    return results


def synthesize_corpus(
    output_dir: str,
    *,
    num_speakers: int = 6,
    utterances_per_split: tuple[int, int, int] = DEFAULT_UTTERANCES,
    seed: int = 0,
    num_workers: int = 2,
    noise_level: float = 1e-3,
    sentences_file: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the corpus under ``output_dir/LibriSpeech`` and return the summary also saved as ``corpus.json``.

    Utterances espeak fails on are logged and skipped (listed under "skipped"). Raises FileExistsError when
    ``output_dir/LibriSpeech`` exists, unless ``overwrite`` (which deletes it first). Shards run in forked child
    processes: call this from a process that has not synthesised with espeak itself, or the children inherit its
    state and the output is no longer byte-reproducible.
    """
    start_time = time.perf_counter()
    root = os.path.join(output_dir, "LibriSpeech")
    if os.path.exists(root):
        if not overwrite:
            raise FileExistsError(f"{root} exists: remove it or pass overwrite=True (--overwrite)")
        shutil.rmtree(root)
    speakers, utterances = plan_corpus(load_sentences(sentences_file), num_speakers, utterances_per_split, seed)

    jobs = []
    for split in SPLITS:
        for speaker in speakers:
            shard = [u for u in utterances if u.split == split and u.utt_id.startswith(f"{speaker.speaker_id}-")]
            if shard:
                jobs.append((os.path.join(root, split), shard, noise_level))
    # One fresh process per shard (maxtasksperchild=1), forked from this process, which never loads espeak itself.
    # fork, like torch's DataLoader workers, also works from a notebook or stdin, where spawn cannot re-import main.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with context.Pool(max(1, num_workers), maxtasksperchild=1) as pool:
        shards = tqdm(pool.imap(_synthesize_shard, jobs, chunksize=1), total=len(jobs), unit="shard",
                      desc=f"synthesising {len(utterances)} utterances")
        results = {r["utt_id"]: r for shard in shards for r in shard}

    skipped = []
    per_split = {split: {"utterances": 0, "seconds": 0.0} for split in SPLITS}
    minutes_per_speaker = {speaker.speaker_id: 0.0 for speaker in speakers}
    transcripts: dict[str, list[str]] = {}
    for utt in utterances:
        result = results[utt.utt_id]
        if "error" in result:
            logger.warning("skipped %s (%r): %s", utt.utt_id, utt.text, result["error"])
            skipped.append({"utt_id": utt.utt_id, "text": utt.text, "error": result["error"]})
            continue
        per_split[utt.split]["utterances"] += 1
        per_split[utt.split]["seconds"] += result["duration"]
        minutes_per_speaker[int(utt.utt_id.split("-")[0])] += result["duration"] / 60
        speaker, chapter, _ = utt.utt_id.split("-")
        key = os.path.join(root, utt.split, speaker, chapter, f"{speaker}-{chapter}.trans.txt")
        transcripts.setdefault(key, []).append(f"{utt.utt_id} {normalize_transcript(utt.text)}\n")
    for path, lines in transcripts.items():
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(sorted(lines))

    with open(os.path.join(root, "SPEAKERS.TXT"), "w", encoding="utf-8") as handle:
        handle.write("; synthetic speakers (espeak-ng voices); every speaker is in every split\n")
        handle.write(";ID  |SEX| SUBSET    |MINUTES| NAME\n")
        for speaker in speakers:
            sex = "F" if "+f" in speaker.voice else "M"
            handle.write(f"{speaker.speaker_id:<5}| {sex} | all       | {minutes_per_speaker[speaker.speaker_id]:5.2f} "
                         f"| {speaker.voice} rate={speaker.rate} pitch={speaker.pitch} range={speaker.pitch_range}\n")
    espeak_version = next((r["espeak"] for r in results.values() if "espeak" in r), None)
    summary = {
        "seed": seed,
        "num_speakers": num_speakers,
        "utterances_per_split": list(utterances_per_split),
        "noise_level": noise_level,
        "sentences_file": sentences_file or "hf_wav2vec2/corpus/sentences.txt",
        "espeak_ng": espeak_version,
        "sample_rate": SAMPLING_RATE,
        "speakers": [asdict(speaker) for speaker in speakers],
        "splits": {split: {**v, "minutes": round(v["seconds"] / 60, 2), "seconds": round(v["seconds"], 2)}
                   for split, v in per_split.items()},
        "skipped": skipped,
    }
    # corpus.json must be identical for identical settings: the wall time goes to the log only.
    with open(os.path.join(root, "corpus.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    logger.info("wrote %s in %.1f s: %s", root, time.perf_counter() - start_time,
                ", ".join(f"{s} {v['utterances']} utt {v['minutes']} min" for s, v in summary["splits"].items()))
    return summary
