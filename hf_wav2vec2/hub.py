"""Hub-ready model folders: weights, config with ``auto_map``, our modeling code, processor and a model card.

A folder written by :func:`save_hub_folder` is complete on its own: in a Python where ``hf_wav2vec2`` is not
installed, ``AutoModelForCTC.from_pretrained(folder, trust_remote_code=True)`` and
``pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True)`` load it from the copied code,
which imports only torch, transformers and huggingface_hub. Where ``hf_wav2vec2`` is imported (it registers
model_type ``w2v2`` with the Auto classes) the same folder loads without ``trust_remote_code``.

    folder = save_hub_folder(model, processor, "hub/w2v2-base-10h", card=card)   # card: a huggingface_hub ModelCard
    push_hub_folder(folder, "me/w2v2-base-10h")        # huggingface_hub.HfApi.upload_folder

``Trainer.push_to_hub`` re-saves the model and overwrites README.md with its own card: push the folder written here
with :func:`push_hub_folder` instead. The Trainer's intermediate pushes (``push_to_hub`` with a save strategy) get
the code files ``auto_map`` names from :class:`PushCodeFilesCallback`, which ``CTCTrainer`` adds. ``auto_map``
itself has one writer, ``W2V2PreTrainedModel.save_pretrained``. The card text belongs to the programs that write
it: :mod:`hf_wav2vec2.cli.cards`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import HfApi, ModelCard
from transformers import TrainerCallback
from transformers.dynamic_module_utils import custom_object_save, get_imports

# Top-level packages the copied modeling code may import besides the standard library: what every transformers
# user has installed.
ALLOWED_CODE_IMPORTS = frozenset({"torch", "transformers", "huggingface_hub"})
# What a pretraining push leaves out: the Accelerate checkpoints (optimizer state, several times the model).
PRETRAINING_PUSH_IGNORE = ("_*", "checkpoints/*", "partial-*")


# ------------------------------------------------------------------------------------------------- the folder
def save_hub_folder(model, processor, output_dir: str | os.PathLike, *, card: ModelCard | None = None,
                    state_dict: Mapping | None = None) -> Path:
    """Write everything a Hub repo of ``model`` needs into ``output_dir`` and return its path.

    1. ``model.safetensors``, ``config.json`` with ``auto_map`` and, for our classes, the modeling code
       (``model.save_pretrained``), with ``state_dict`` as the weights when given (a sharded model's full state
       dict, ``accelerator.get_state_dict(model)``). The copied code is checked to import only the standard
       library, torch, transformers and huggingface_hub.
    2. The processor files (``processor.save_pretrained``), checked against the model's vocabulary and blank.
    3. ``README.md``, the model card, when ``card`` is given (``hf_wav2vec2.cli.cards.build_model_card``).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _check_processor(model, processor)
    # 1. weights, config, code
    model.save_pretrained(output_dir, state_dict=None if state_dict is None else dict(state_dict))
    check_code_imports(sorted(output_dir.glob("*.py")))
    # 2. processor
    if processor is not None:
        processor.save_pretrained(output_dir)
    # 3. card
    if card is not None:
        card.save(output_dir / "README.md")
    return output_dir


def _check_processor(model, processor) -> None:
    """The tokenizer must decode the model's outputs: same blank (pad) id, no more base tokens than logits."""
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        return
    cfg = model.config
    if getattr(cfg, "vocab_size", None) is None:
        return  # a pretraining model: the processor is only its feature extractor plus a future vocabulary
    if tokenizer.pad_token_id != cfg.pad_token_id:
        raise ValueError(f"the tokenizer's pad token id ({tokenizer.pad_token_id}) is the CTC blank and must equal "
                         f"config.pad_token_id ({cfg.pad_token_id})")
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size} "
                         "logits (config.vocab_size)")


def check_code_imports(files: Sequence[str | os.PathLike]) -> None:
    """Raise if a code file for the Hub imports anything beyond the standard library and ALLOWED_CODE_IMPORTS."""
    for path in files:
        extra = {name for name in get_imports(path)
                 if name not in sys.stdlib_module_names and name not in ALLOWED_CODE_IMPORTS}
        if extra:
            raise ValueError(f"{path} imports {sorted(extra)}: Hub code may import only the standard library and "
                             f"{sorted(ALLOWED_CODE_IMPORTS)}")


def check_hub_folder(folder: str | os.PathLike) -> list[str]:
    """What is missing from a Hub folder ([] when complete): weights, config, the code ``auto_map`` points to,
    tokenizer and feature-extractor files, model card."""
    folder = Path(folder)
    problems = []
    if not any(folder.glob("*.safetensors")):
        problems.append("no *.safetensors weights")
    config_path = folder / "config.json"
    if not config_path.is_file():
        return problems + ["no config.json"]
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") == "w2v2":
        auto_map = config.get("auto_map", {})
        for auto_class in ("AutoConfig", "AutoModel"):
            if auto_class not in auto_map:
                problems.append(f"config.json auto_map lacks {auto_class}")
        for auto_class, ref in auto_map.items():
            module = ref.rsplit(".", 1)[0]
            if not (folder / f"{module}.py").is_file():
                problems.append(f"auto_map {auto_class} -> {ref}, but {module}.py is missing")
    # A CTC head needs its tokenizer; a pretraining model's vocab_size (a config default) decodes nothing.
    architectures = config.get("architectures") or []
    needs_tokenizer = any("ForCTC" in name for name in architectures) if architectures \
        else config.get("vocab_size") is not None
    for name in ("vocab.json", "tokenizer_config.json"):
        if needs_tokenizer and not (folder / name).is_file():
            problems.append(f"no {name} (tokenizer)")
    if not ((folder / "preprocessor_config.json").is_file() or (folder / "processor_config.json").is_file()):
        problems.append("no preprocessor_config.json / processor_config.json (feature extractor)")
    if not (folder / "README.md").is_file():
        problems.append("no README.md (model card)")
    return problems


def save_code_files(model, folder: str | os.PathLike) -> list[Path]:
    """Copy the modeling code of ``model`` into ``folder``: the files of its class and of its config class and,
    recursively, their relative imports (transformers' ``custom_object_save``), checked by
    :func:`check_code_imports`. [] for transformers' own classes, which need no code."""
    for wrapper in ("module", "_orig_mod"):  # DDP, torch.compile
        model = getattr(model, wrapper, model)
    if type(model).__module__.startswith("transformers."):
        return []
    os.makedirs(folder, exist_ok=True)
    copied = [*(custom_object_save(model, folder) or []), *(custom_object_save(model.config, folder) or [])]
    copied = list(dict.fromkeys(Path(path) for path in copied))
    check_code_imports(copied)
    return copied


class PushCodeFilesCallback(TrainerCallback):
    """Every push of the ``Trainer`` carries the code that config.json's ``auto_map`` names.

    With ``push_to_hub`` and a ``save_strategy``, the Trainer uploads ``output_dir`` at every checkpoint
    (``_push_from_checkpoint``): it copies only config.json and the weights from the checkpoint folder into
    ``output_dir``, so the first pushes published a config whose ``auto_map`` points at ``modeling.py`` and
    ``configuration.py`` that were not in the repository (``trust_remote_code`` loading failed until the end of
    training). ``on_push_begin`` runs before every upload, intermediate and final: the code is written into
    ``output_dir`` there. The checkpoint folders themselves (``hub_strategy="checkpoint"``) already hold the code,
    which ``save_pretrained`` writes for our registered classes.
    """

    def on_push_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and model is not None:
            save_code_files(model, args.output_dir)


def push_hub_folder(folder: str | os.PathLike, repo_id: str, *, token: str | None = None,
                    private: bool | None = None, commit_message: str = "Upload wav2vec 2.0 CTC model",
                    revision: str | None = None, create_pr: bool = False,
                    ignore_patterns: Sequence[str] = ("_*", "checkpoint-*", "runs/*")):
    """Create ``repo_id`` if needed and upload ``folder`` with ``huggingface_hub.HfApi.upload_folder`` (what
    ``Trainer.push_to_hub`` and ``model.push_to_hub`` call). Refuses an incomplete folder
    (:func:`check_hub_folder`). Returns the ``CommitInfo``."""
    problems = check_hub_folder(folder)
    if problems:
        raise ValueError(f"{folder} is not ready to push: " + "; ".join(problems))
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), commit_message=commit_message,
                             revision=revision, create_pr=create_pr, ignore_patterns=list(ignore_patterns),
                             repo_type="model")
