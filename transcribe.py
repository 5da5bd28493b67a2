"""Thin entry point of a source checkout: the program is ``hf_wav2vec2.cli.transcribe`` (usage in its docstring)."""

from hf_wav2vec2.cli.transcribe import main

if __name__ == "__main__":
    main()
