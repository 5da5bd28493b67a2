"""Thin entry point of a source checkout: the program is ``hf_wav2vec2.cli.evaluate_ctc`` (usage in its docstring)."""

from hf_wav2vec2.cli.evaluate_ctc import main

if __name__ == "__main__":
    main()
