"""``python -m hf_wav2vec2.corpus --output_dir DIR [...]``: write the synthetic corpus (see the package docstring)."""

import argparse
import json
import logging
import os
import time

from .synth import DEFAULT_UTTERANCES, VOICES, synthesize_corpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hf_wav2vec2.corpus",
        description="The default corpus: English speech synthesised with espeak-ng, written in the LibriSpeech layout.",
    )
    parser.add_argument("--output_dir", required=True, help="the corpus goes to OUTPUT_DIR/LibriSpeech")
    parser.add_argument("--num_speakers", type=int, default=6, help=f"1..{len(VOICES)} distinct voices")
    parser.add_argument("--utterances_per_split", default=",".join(map(str, DEFAULT_UTTERANCES)),
                        help="TRAIN,DEV,TEST utterance counts, or one count for all three")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--noise_level", type=float, default=1e-3, help="std of the added white noise floor")
    parser.add_argument("--sentences", default=None, help="a sentence file (one per line) instead of the shipped one")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT_DIR/LibriSpeech")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.utterances_per_split.split(",")]
    if len(counts) == 1:
        counts *= 3
    if len(counts) != 3 or min(counts) < 0:
        parser.error("--utterances_per_split takes TRAIN,DEV,TEST (or one count), all >= 0")
    if not 1 <= args.num_speakers:
        parser.error("--num_speakers must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    summary = synthesize_corpus(args.output_dir, num_speakers=args.num_speakers, utterances_per_split=tuple(counts),
                                seed=args.seed, num_workers=args.num_workers, noise_level=args.noise_level,
                                sentences_file=args.sentences, overwrite=args.overwrite)
    print(json.dumps({"wall_s": round(time.perf_counter() - start, 1), "splits": summary["splits"],
                      "speakers": [s["voice"] for s in summary["speakers"]], "skipped": len(summary["skipped"])},
                     indent=2))


if __name__ == "__main__":
    main()
