"""The four command-line programs, installed as console commands (see pyproject.toml) and also run by the thin
top-level scripts of a source checkout:

    w2v2-pretrain     = train_pretrain.py   self-supervised pretraining (accelerate launch / torchrun / python)
    w2v2-train-ctc    = train_ctc.py        CTC fine-tuning with the transformers Trainer
    w2v2-evaluate-ctc = evaluate_ctc.py     WER/CER of a CTC model on a dataset split
    w2v2-transcribe   = transcribe.py       transcripts of audio files

Each module reads top to bottom (usage docstring, arguments dataclass, numbered sections) and ends in ``main``.
Beside them: ``cards`` and ``card_info``, the model cards the two training scripts write.
"""
