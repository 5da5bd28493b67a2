"""What loading a model checks that transformers leaves to warnings or to silence: a mistyped local folder, a damaged
safetensors file, weights that do not fit, NaN or infinite weights. ``W2V2PreTrainedModel.from_pretrained`` and
``W2V2Config.from_pretrained`` call these; the data sources use :func:`looks_like_local_path` too.

A sibling of modeling.py that imports only the standard library, torch and huggingface_hub: it travels with the
modeling code into saved folders (remote code).
"""

from __future__ import annotations

import difflib
import glob
import json
import os
import struct

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

# Parameters a folder may legitimately lack: the heads (a pretraining folder has no CTC projection, a fine-tuned one no
# quantizer) and the mask embedding (official folders carry it only when their config masks).
HEAD_PREFIXES = ("lm_head.", "quantizer.", "project_q.", "project_hid.")
OPTIONAL_BASE_PARAMETERS = ("masked_spec_embed",)


def looks_like_local_path(name: str) -> bool:
    """True for a name that can only mean a local path, never a Hub id: it starts with ``./``, ``../``, ``/`` or
    ``~``, contains the OS's own separator (where that is not ``/``), has more than one ``/``, is not a valid Hub id
    (a trailing slash, spaces, ...), or its first component is a folder here (``runs/typo`` beside ``runs/``).
    Model and dataset loaders both use it, so that a mistyped local path is reported as missing, not sent to the
    Hub."""
    if name.startswith(("./", "../", "/", "~")) or name.count("/") > 1 or \
            any(sep in name for sep in (os.sep, os.altsep) if sep and sep != "/"):
        return True
    if "/" in name and os.path.isdir(name.split("/", 1)[0]):
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def check_model_path(name_or_path) -> None:
    """Raise FileNotFoundError when ``name_or_path`` is meant to be a local model folder that does not exist.

    transformers treats every path it cannot find as a Hub id and reports a network problem (offline: "couldn't
    connect to huggingface.co"), which hides a mistyped ``runs/typo``. Which names are local:
    :func:`looks_like_local_path`; other names (``facebook/wav2vec2-base``) are left to transformers' Hub lookup.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        return
    name = os.fspath(name_or_path)
    if not name or os.path.exists(os.path.expanduser(name)) or not looks_like_local_path(name):
        return
    path = os.path.abspath(os.path.expanduser(name))
    parent = os.path.dirname(path)
    while parent and not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    hint = ""
    if os.path.isdir(parent) and os.path.dirname(path) == parent:
        close = difflib.get_close_matches(os.path.basename(path), sorted(os.listdir(parent)), n=3)
        hint = f"; did you mean {', '.join(os.path.join(os.path.dirname(name), c) for c in close)}?" if close else ""
    raise FileNotFoundError(f"model folder {name!r} does not exist ({path}; nearest existing folder: {parent}){hint}. "
                            "It looks like a local path, so the Hub was not asked.")


def weight_files(name_or_path, subfolder: str = "") -> list[str]:
    """The weight files of a local model folder (safetensors, else PyTorch .bin), or [] for a Hub id."""
    folder = os.path.join(os.fspath(name_or_path), subfolder or "")
    if not os.path.isdir(folder):
        return []
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    return files or sorted(glob.glob(os.path.join(folder, "*.bin")))


def safetensors_problem(path: str) -> str | None:
    """What is wrong with a safetensors file's framing (8-byte header size, JSON header, data length), or None.
    Checked with the standard library so that the error can say which of several files is damaged."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > size - 8:
                return "header longer than the file"
            header = json.loads(handle.read(header_len))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        if 8 + header_len + max(ends, default=0) != size:
            return "data does not match the header's offsets"
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as error:
        return str(error) or type(error).__name__
    return None


def check_loaded_weights(model: torch.nn.Module, info: dict, source: str) -> None:
    """Raise when the loaded weights cannot be trusted (see ``W2V2PreTrainedModel.from_pretrained``)."""
    not_loaded = set(info.get("missing_keys", ())) | {
        m[0] if isinstance(m, (tuple, list)) else m for m in info.get("mismatched_keys", ())}
    base_missing = sorted(k for k in not_loaded
                          if not k.startswith(HEAD_PREFIXES) and k.rsplit(".", 1)[-1] not in OPTIONAL_BASE_PARAMETERS)
    if base_missing:
        unexpected = sorted(info.get("unexpected_keys", ()))
        fairseq = any(k.startswith(("w2v_encoder.", "post_extract_proj", "encoder.pos_conv.0", "mask_emb"))
                      or ".self_attn." in k for k in unexpected)
        hint = (" These look like fairseq names: convert the checkpoint with `python -m hf_wav2vec2.convert_fairseq "
                "--checkpoint CKPT.pt --output_dir DIR`." if fairseq else "")
        unused = (f"; {len(unexpected)} weights in the file are not used ({', '.join(unexpected[:5])}"
                  f"{', ...' if len(unexpected) > 5 else ''})" if unexpected else "")
        raise ValueError(
            f"the weights in {source} do not fit {type(model).__name__}: {len(base_missing)} of its "
            f"{len(model.state_dict())} parameters are missing or of another shape ({', '.join(base_missing[:5])}"
            f"{', ...' if len(base_missing) > 5 else ''}){unused}. Loading would leave them randomly "
            f"initialised.{hint}")
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and name not in not_loaded and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ValueError(f"the weights in {source} contain NaN or infinite values in {len(bad)} tensors "
                         f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}): the file is damaged or the "
                         "training diverged")
