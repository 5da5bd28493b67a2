"""Thin entry point of a source checkout: the program is ``hf_wav2vec2.cli.train_pretrain`` (usage in its docstring)."""

from hf_wav2vec2.cli.train_pretrain import main

if __name__ == "__main__":
    main()
