"""Checkpoint folders of both training scripts: which checkpoint is complete, which is the latest, which belong to
this run, what an output folder that already holds a run means, and a clear error when the disk fills up.

A checkpoint folder is ``checkpoint-<update>``; it is complete when its ``marker`` file exists (the file written
last: our ``training_state.json`` in pretraining, the Trainer's ``trainer_state.json`` in fine-tuning). The rules
that keep work safe:

* a fresh run refuses an output folder that holds another run (checkpoints or a saved model) unless told to resume
  (``--resume_from_checkpoint latest``) or to overwrite (``--overwrite_output_dir``, which deletes that run's
  checkpoints first);
* a run resumed from checkpoint K moves what would collide with its future saves (complete checkpoints after K,
  incomplete ones) into ``superseded-<time>/`` beside them, never deleting them;
* pruning keeps the newest ``keep`` checkpoints of this run's lineage (the ``run_id`` recorded in each), and never
  touches a folder of another lineage.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time

logger = logging.getLogger("hf_wav2vec2.training")

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: str) -> int | None:
    """The update number of a ``checkpoint-<update>`` folder name, None for anything else."""
    match = _CHECKPOINT.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else None


def list_checkpoints(folder: str, marker: str) -> list[tuple[int, str, bool]]:
    """``(update, path, complete)`` of every ``checkpoint-<update>`` folder directly in ``folder``, by update."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        step = checkpoint_step(name)
        path = os.path.join(folder, name)
        if step is not None and os.path.isdir(path):
            found.append((step, path, os.path.isfile(os.path.join(path, marker))))
    return sorted(found)


def latest_checkpoint(folder: str, marker: str) -> str | None:
    """The complete checkpoint with the highest update number in ``folder``, or None."""
    complete = [path for _, path, done in list_checkpoints(folder, marker) if done]
    return complete[-1] if complete else None


def check_output_dir(checkpoints_dir: str, *, marker: str, resume: str | None, overwrite: bool,
                     model_files: list[str], option: str = "--overwrite_output_dir") -> str | None:
    """Check the output folder before any work, and resolve ``resume`` (``"latest"``, a path or None).

    Returns the checkpoint to resume from (None: start from scratch). Raises ``ValueError`` when the folder holds
    another run and the command neither resumes nor overwrites, or when ``resume`` names an incomplete or missing
    checkpoint. With ``overwrite`` and no resume, the previous run's checkpoints and model files are deleted (that
    is what the option asks for). When resuming from checkpoint K, later and incomplete checkpoints are moved into
    ``superseded-<time>/`` so that this run's next saves never collide with them.
    """
    if resume == "latest":
        resume = latest_checkpoint(checkpoints_dir, marker)
        if resume is None:
            logger.info("no complete checkpoint in %s: starting from scratch", checkpoints_dir)
            if os.path.isdir(checkpoints_dir):
                set_aside_after(checkpoints_dir, -1, marker)  # incomplete folders of a run killed while saving
    elif resume is not None:
        if not os.path.isdir(resume):
            raise ValueError(f"--resume_from_checkpoint {resume}: no such folder")
        if not os.path.isfile(os.path.join(resume, marker)):
            raise ValueError(f"--resume_from_checkpoint {resume}: not a complete checkpoint (no {marker}; a run "
                             f"killed while saving leaves such a folder), use another one or 'latest'")
    if resume is not None and os.path.dirname(os.path.abspath(resume)) == os.path.abspath(checkpoints_dir):
        set_aside_after(checkpoints_dir, checkpoint_step(resume), marker)
        return resume
    others = [name for name in os.listdir(checkpoints_dir)
              if name.startswith(("partial-", "checkpoint-"))] if os.path.isdir(checkpoints_dir) else []
    saved = [path for path in model_files if os.path.exists(path)]
    if others or saved:
        if not overwrite:
            what = f"{len(others)} checkpoint folder(s) in {checkpoints_dir}" if others else ", ".join(saved)
            raise ValueError(
                f"the output folder already holds another run ({what}): pass --resume_from_checkpoint latest to "
                f"continue it, {option} to replace it, or choose another output folder")
        for name in others:
            shutil.rmtree(os.path.join(checkpoints_dir, name))
        for path in saved:
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        logger.warning("%s: deleted the previous run's %d checkpoint folder(s) and %d model file(s)", option,
                       len(others), len(saved))
    return resume


def set_aside_after(checkpoints_dir: str, step: int, marker: str) -> str | None:
    """Move complete checkpoints after ``step`` and every incomplete one (and ``partial-*`` folders) into a new
    ``superseded-<time>`` folder: they belong to the abandoned continuation of the checkpoint a run resumes from.
    Returns that folder, or None when nothing had to move."""
    moving = [path for s, path, done in list_checkpoints(checkpoints_dir, marker) if s > step or not done]
    moving += [os.path.join(checkpoints_dir, n) for n in os.listdir(checkpoints_dir) if n.startswith("partial-")]
    if not moving:
        return None
    aside = os.path.join(checkpoints_dir, time.strftime("superseded-%Y%m%d-%H%M%S"))
    os.makedirs(aside, exist_ok=True)
    for path in moving:
        os.replace(path, os.path.join(aside, os.path.basename(path)))
    logger.warning("resuming from update %d: moved %d later or incomplete checkpoint folder(s) to %s (delete them "
                   "when no longer needed)", step, len(moving), aside)
    return aside


def checkpoint_run_id(path: str, marker: str, key: str = "run_id") -> str | None:
    """The lineage id recorded in a checkpoint's JSON marker (None when absent or unreadable)."""
    try:
        with open(os.path.join(path, marker)) as handle:
            return json.load(handle).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def prune_checkpoints(checkpoints_dir: str, keep: int, run_id: str, marker: str, protect: tuple = ()) -> None:
    """Delete the oldest complete checkpoints of lineage ``run_id`` beyond the newest ``keep`` (``protect``:
    paths never deleted, e.g. the best one). Checkpoints of any other lineage are left alone."""
    if keep is None or keep <= 0:
        return
    ours = [path for _, path, done in list_checkpoints(checkpoints_dir, marker)
            if done and checkpoint_run_id(path, marker) == run_id]
    protected = {os.path.abspath(p) for p in protect if p}
    for path in ours[:-keep]:
        if os.path.abspath(path) not in protected:
            shutil.rmtree(path, ignore_errors=True)


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC / EDQUOT, also as PyTorch's zip writer reports it (``inline_container.cc ... unexpected pos``)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "unexpected pos" in text or "Disk quota exceeded" in text


def disk_full_error(folder: str, error: BaseException, last_good: str | None) -> OSError:
    """The error a training script raises when a checkpoint could not be written for lack of disk space."""
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(folder)) or ".").free
    kept = f"the last complete checkpoint {last_good} is intact" if last_good else "no earlier checkpoint exists"
    return OSError(errno.ENOSPC, f"disk full while saving the checkpoint {folder} ({free / 2**20:.0f} MiB free): "
                                 f"the partial checkpoint was removed and {kept}; free some space (or lower "
                                 f"--save_total_limit) and resume with --resume_from_checkpoint latest")
