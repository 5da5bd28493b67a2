"""Transcribe audio files with a CTC model through the ASR pipeline (no FFmpeg needed): greedy decoding, or beam
search with a KenLM n-gram.

Usage:
    python transcribe.py --model runs/ctc-base-10h --files speech.flac other.wav
    python transcribe.py --model me/w2v2-base-10h --timestamps word --files long_recording.flac
    python transcribe.py --model runs/ctc-base-10h --kenlm 4-gram.arpa.gz --beam_size 500 --files speech.flac

Files are transcribed one by one, decoded with soundfile and resampled to 16 kHz with soxr. A file longer than
``--max_duration_s`` (default 60 s) is cut into chunks of that length with a sixth of it as context on each side
(``--chunk_length_s`` / ``--stride_length_s`` choose the chunking yourself; ``--chunk_length_s 0``: one pass).
With ``--kenlm`` the logits of a file's chunks are joined and beam-searched as one.

Prints one JSON line per file, as soon as it is done: ``{"file", "text"}`` and, with ``--timestamps``, ``"chunks"``
(text and start/end seconds per character or word), or ``{"file", "error"}`` for a file that could not be
transcribed (missing, unreadable, ...). The exit status is 1 when any file failed, 0 otherwise.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser

import hf_wav2vec2  # registers model_type "w2v2" with the Auto classes
from hf_wav2vec2.pipeline import DEFAULT_MAX_DURATION_S, asr_pipeline


@dataclass
class Arguments:
    model: str = field(metadata={"help": "model folder or Hub id"})
    files: list[str] = field(metadata={"help": "audio files (WAV, FLAC, OGG, MP3), any sampling rate"})
    max_duration_s: float = field(default=DEFAULT_MAX_DURATION_S, metadata={
        "help": "files longer than this are transcribed in chunks of this length (0: never chunk automatically)"})
    chunk_length_s: float | None = field(default=None, metadata={
        "help": "chunk every file into pieces of this length (0: one pass, however long; default: see "
                "--max_duration_s)"})
    stride_length_s: float | None = field(default=None, metadata={"help": "context on each side of a chunk "
                                                                          "(default: chunk length / 6)"})
    timestamps: str | None = field(default=None, metadata={"help": "char or word (with --kenlm: word)"})
    batch_size: int = field(default=1, metadata={"help": "chunks of a file run together"})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu")
    trust_remote_code: bool = False
    kenlm: str | None = field(default=None, metadata={"help": "KenLM model (ARPA or binary): beam search with it"})
    lexicon: str | None = field(default=None, metadata={"help": "lexicon or word list (default: the ARPA unigrams)"})
    beam_size: int = 50
    lm_weight: float = 2.0
    word_score: float = -1.0


def run(argv: list[str] | None = None) -> list[dict]:
    """Transcribe every file, printing one JSON line each; returns them (failed files carry ``"error"``)."""
    (args,) = HfArgumentParser(Arguments).parse_args_into_dataclasses(args=argv)
    hf_wav2vec2.check_model_path(args.model)  # a mistyped local folder: "does not exist", not a Hub error
    if args.kenlm is not None and args.timestamps not in (None, "word"):
        raise SystemExit("--kenlm gives word timestamps only: --timestamps word")
    # 1. the pipeline, with the LM decoder when asked
    lm = {} if args.kenlm is None else dict(kenlm_model=args.kenlm, lexicon=args.lexicon, beam_size=args.beam_size,
                                            lm_weight=args.lm_weight, word_score=args.word_score)
    asr = asr_pipeline(args.model, device=args.device, trust_remote_code=args.trust_remote_code, **lm)
    options = {"batch_size": args.batch_size, "max_duration_s": args.max_duration_s or None}
    if args.chunk_length_s is not None:
        options.update(chunk_length_s=args.chunk_length_s, stride_length_s=args.stride_length_s)
    if args.timestamps:
        options["return_timestamps"] = args.timestamps

    # 2. file by file: one bad file is reported on its line and does not stop the others
    results = []
    for path in args.files:
        try:
            out = asr(path, **options)
        except Exception as error:  # noqa: BLE001  (any failure belongs to this file's line)
            result = {"file": path, "error": f"{type(error).__name__}: {error}"}
        else:
            result = {"file": path, "text": out["text"]}
            if args.timestamps:
                result["chunks"] = [{"text": c["text"], "timestamp": [float(t) for t in c["timestamp"]]}
                                    for c in out["chunks"]]
        print(json.dumps(result, ensure_ascii=False), flush=True)  # every script's letters as they are
        results.append(result)
    return results


def main() -> None:
    """The console command: ``run`` on the command line's arguments; exit status 1 when a file failed."""
    results = run()
    failed = sum("error" in result for result in results)
    if failed:
        print(f"{failed} of {len(results)} file(s) failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
