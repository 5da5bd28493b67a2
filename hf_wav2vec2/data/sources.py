"""``load_speech_dataset``: local speech trees or a Hub dataset, as one ``datasets.Dataset`` with a fixed schema.

Every source ends up with the same columns, read from file headers only (nothing is decoded here):

    id           str    utterance id, e.g. "1995-1837-0001" (a plain folder: the path relative to it, no extension)
    path         str    audio file (for a Hub source: whatever path the dataset stores, maybe only a file name)
    text         str    normalised transcript (a ``TextNormalizer``: see ``load_speech_dataset``), "" when none
    speaker_id   str    "" when unknown
    duration     float  seconds, at the file's own sampling rate
    num_samples  int    samples after resampling to ``target_sr``: what ``decode_audio`` will return

A Hub source keeps its audio column, as ``audio`` with the ``datasets.Audio(decode=False)`` feature: a dict
``{"bytes": encoded file or None, "path": str}``. It is the dataset's own column placed beside the new ones (no
copy of the audio is made). When Hub and local sources are mixed, local rows get ``{"bytes": None, "path": path}``.
Decoders (``AudioDataset``, ``PretrainingCollator``) use ``audio`` when it holds bytes and ``path`` otherwise.

Recognised local layouts (a path that exists):
    LibriSpeech root   ``<root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``
                       + ``<speaker>-<chapter>.trans.txt``; ``split="train-clean-100+train-clean-360"`` joins splits.
                       A folder holding ``LibriSpeech/`` (where the OpenSLR archives unpack, and what
                       ``hf_wav2vec2.corpus`` writes) works too.
    split folder       ``<root>/<speaker>/<chapter>/...``: everything under it (``split`` is ignored).
    Libri-light        ``librispeech_finetuning/{1h/{0..5},9h}/{clean,other}/<speaker>/<chapter>/...``, with
                       ``split`` one of LIBRI_LIGHT_SUBSETS: "10min" (fold 0 of 1h), "10min:K" (fold K), "1h"
                       (the six folds), "9h", "10h" (1h + 9h: the paper's 10 h set).
    plain folder       audio files at any depth (flac, wav, ogg, opus, mp3); ``*.trans.txt`` files are used if present.
    datasets folder    what ``datasets`` reads: a ``save_to_disk`` folder (``datasets.load_from_disk``); a folder in the
                       Hub layout (a README.md whose YAML declares ``configs:``, or parquet/arrow data files), read
                       with ``datasets.load_dataset(folder, hub_config, split=split)``; an audiofolder (audio files
                       beside a ``metadata.csv``/``.jsonl``/``.parquet`` with a ``file_name`` column, configs from
                       README.md or ``data_dir``): ``datasets`` resolves its configs, splits and metadata, the
                       audio is read here (datasets 5 would need torchcodec to build its Audio column).
Anything else is taken as a Hub dataset name, loaded with ``datasets.load_dataset(name, hub_config, split=split)``.
"""

import codecs
import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import datasets

from ..configuration import SAMPLING_RATE
from ..loading import looks_like_local_path
from .audio import AudioError, audio_info, resampled_length
from .text import LIBRISPEECH, TextNormalizer

logger = logging.getLogger("hf_wav2vec2.data")

AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".opus", ".mp3")
LIBRI_LIGHT_SUBSETS = ("10min", "10min:K", "1h", "9h", "10h")
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "path": datasets.Value("string"),
        "text": datasets.Value("string"),
        "speaker_id": datasets.Value("string"),
        "duration": datasets.Value("float64"),
        "num_samples": datasets.Value("int64"),
    }
)
HUB_FEATURES = datasets.Features({**FEATURES, "audio": datasets.Audio(decode=False)})
# Transcript columns of common Hub speech datasets, tried in this order when text_column is not given.
_TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text")
_LIBRISPEECH_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
# What datasets' audiofolder reads beside the audio files.
_METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


@dataclass
class LoadReport:
    """What ``load_speech_dataset`` left out, and why."""

    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): unusable files
    dropped_by_duration: int = 0  # usable utterances outside [min_duration_s, max_duration_s]
    missing_transcripts: int = 0  # audio files next to *.trans.txt files that do not list them (kept, text "")
    num_utterances: int = 0  # rows in the returned dataset


def load_speech_dataset(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    split: str | None = None,
    min_duration_s: float | None = None,
    max_duration_s: float | None = None,
    target_sr: int = SAMPLING_RATE,
    min_samples: int = 1,
    max_channels: int | None = None,
    hub_config: str | None = None,
    hub_kwargs: dict | None = None,
    audio_column: str = "audio",
    text_column: str | None = None,
    normalizer: TextNormalizer | None = None,
    max_samples: int | None = None,
    num_workers: int = 8,
    return_report: bool = False,
) -> datasets.Dataset | tuple[datasets.Dataset, LoadReport]:
    """Load and concatenate speech sources into one dataset with the columns listed in the module docstring.

    Args:
        sources: one source or a list; each a local folder (see the module docstring) or a Hub dataset name.
        split: LibriSpeech split(s) joined by '+', a Libri-light subset, or the ``datasets`` split (``train``,
            ``train+validation``); the same for every source that needs one (load separately and
            ``datasets.concatenate_datasets`` to mix different splits).
        min_duration_s, max_duration_s: drop utterances outside this range (counted and logged).
        target_sr: the rate ``num_samples`` refers to.
        min_samples: files shorter than this after resampling are skipped; pass the model's receptive field
            (``config.receptive_field``). The default, 1, only skips files that resample to no sample.
        max_channels: files with more channels are skipped; None accepts any (they are averaged to mono).
        hub_config, hub_kwargs: the configuration name (Common Voice's language, ``clean``) and extra arguments of
            ``datasets.load_dataset``, for Hub names and datasets folders.
        audio_column, text_column: column names in a ``datasets`` source (text: auto-detected when None, from
            text, sentence, transcription, transcript, normalized_text).
        normalizer: how the ``text`` column is written. None: :func:`default_normalizer` of each source
            (LibriSpeech's English style for LibriSpeech/Libri-light trees and ``librispeech_asr``, the ``unicode``
            style of any language for everything else). A training script passes the one of its model.
        max_samples: keep only the first N utterances of each source (the examples' ``max_train_samples``); a
            ``datasets`` source is cut before its audio headers are read.
        num_workers: threads reading file headers.
        return_report: also return a ``LoadReport``.

    Unusable files (unreadable header, no samples, too many channels, too short) are logged with their path and
    reason on the "hf_wav2vec2.data" logger and skipped; loading never fails because of one bad file.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise ValueError("no sources given")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be at least 1, got {max_samples}")
    report = LoadReport()
    parts = []
    for source in sources:
        source = os.fspath(source)
        source_normalizer = normalizer or default_normalizer(source)
        if os.path.exists(source) and _datasets_folder_kind(source) is None:
            rows = []
            for folder in _resolve_local_folders(source, split):
                rows += _scan_folder(folder, target_sr, min_samples, max_channels, num_workers, report)
            for row in rows[:max_samples]:
                row["text"] = source_normalizer(row["text"])
            # Column-wise, so that a source with no usable file still gives a dataset with the full schema.
            columns = {name: [row[name] for row in rows[:max_samples]] for name in FEATURES}
            parts.append(datasets.Dataset.from_dict(columns, features=FEATURES))
        elif not os.path.exists(source) and looks_like_local_path(source):
            raise FileNotFoundError(f"no such folder: {source} (a local path, not a Hub dataset name)")
        else:
            hub = _load_datasets_source(source, hub_config, split, hub_kwargs or {})
            if max_samples is not None and max_samples < len(hub):
                hub = hub.select(range(max_samples))
            parts.append(
                from_hf_dataset(hub, audio_column=audio_column, text_column=text_column, id_prefix=source,
                                target_sr=target_sr, min_samples=min_samples, max_channels=max_channels,
                                normalizer=source_normalizer, report=report)
            )
    # Local rows get an audio column too, so that they concatenate with Hub rows.
    if any("audio" in part.column_names for part in parts):
        parts = [
            part if "audio" in part.column_names
            else part.add_column("audio", [{"bytes": None, "path": p} for p in part["path"]],
                                 feature=HUB_FEATURES["audio"])
            for part in parts
        ]
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if report.skipped:
        logger.warning("skipped %d unusable audio file(s) (listed above)", len(report.skipped))

    if min_duration_s is not None or max_duration_s is not None:
        low = min_duration_s if min_duration_s is not None else 0.0
        high = max_duration_s if max_duration_s is not None else float("inf")
        before = len(dataset)
        dataset = dataset.filter(lambda d: [low <= x <= high for x in d], input_columns=["duration"], batched=True)
        report.dropped_by_duration = before - len(dataset)
        if report.dropped_by_duration:
            logger.info("dropped %d utterance(s) outside [%s, %s] s", report.dropped_by_duration, low, high)
    report.num_utterances = len(dataset)
    return (dataset, report) if return_report else dataset


def from_hf_dataset(
    dataset: datasets.Dataset,
    *,
    audio_column: str = "audio",
    text_column: str | None = None,
    id_prefix: str = "utt",
    target_sr: int = SAMPLING_RATE,
    min_samples: int = 1,
    max_channels: int | None = None,
    normalizer: TextNormalizer | None = None,
    report: LoadReport | None = None,
) -> datasets.Dataset:
    """Map a loaded ``datasets.Dataset`` with an audio column to the unified schema, keeping the column as ``audio``.

    The audio column is cast to ``Audio(decode=False)``, so nothing is decoded (datasets' own decoding would need
    torchcodec and FFmpeg). ``id``/``speaker_id`` come from those columns when present (``client_id`` counts as a
    speaker), else ``f"{id_prefix}-{row index}"`` and "". Only the new, small columns are written (through
    ``Dataset.map``, on disk for a cached dataset); the audio column is placed beside them as it is, and unusable
    rows are hidden by an index mapping: a large dataset is never copied. Unusable rows are logged and recorded in
    ``report``. The text is normalised by ``normalizer`` (None: ``TextNormalizer()``, any language).
    """
    report = report if report is not None else LoadReport()
    normalizer = normalizer or TextNormalizer()
    if audio_column not in dataset.column_names:
        raise ValueError(f"audio column {audio_column!r} not found; the dataset has {dataset.column_names} "
                         "(--audio_column_name)")
    if text_column is None:
        text_column = next((name for name in _TEXT_COLUMNS if name in dataset.column_names), None)
    elif text_column not in dataset.column_names:
        raise ValueError(f"text column {text_column!r} not found; the dataset has {dataset.column_names} "
                         "(--text_column_name)")
    speaker_column = next((c for c in ("speaker_id", "client_id") if c in dataset.column_names), None)
    id_column = "id" if "id" in dataset.column_names else None
    dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    if dataset._indices is not None:  # a shuffled/selected dataset: the side-by-side concatenation needs it flat
        dataset = dataset.flatten_indices()
    input_columns = [c for c in (audio_column, text_column, speaker_column, id_column) if c is not None]

    def describe(*batch_and_indices):  # one list per input column, then the row indices
        columns = dict(zip(input_columns, batch_and_indices[:-1]))
        indices = batch_and_indices[-1]
        out = {name: [] for name in (*FEATURES, "error")}
        for row, index in enumerate(indices):
            audio = columns[audio_column][row]
            try:
                file_samples, sampling_rate, channels = audio_info(audio)
                error = _header_problem(file_samples, sampling_rate, channels, target_sr, min_samples, max_channels)
            except AudioError as bad:
                file_samples, sampling_rate, error = 0, target_sr, bad.reason
            out["id"].append(str(columns[id_column][row]) if id_column else f"{id_prefix}-{index}")
            out["path"].append(audio.get("path") or "")
            out["text"].append(normalizer(columns[text_column][row] or "") if text_column else "")
            out["speaker_id"].append(str(columns[speaker_column][row]) if speaker_column else "")
            out["duration"].append(file_samples / sampling_rate)
            out["num_samples"].append(resampled_length(file_samples, sampling_rate, target_sr))
            out["error"].append(error or "")
        return out

    features = datasets.Features({**FEATURES, "error": datasets.Value("string")})
    described = dataset.map(describe, input_columns=input_columns, with_indices=True, batched=True, batch_size=256,
                            features=features, remove_columns=dataset.column_names)
    audio = dataset.select_columns([audio_column])
    if audio_column != "audio":
        audio = audio.rename_column(audio_column, "audio")
    combined = datasets.concatenate_datasets([described, audio], axis=1)
    errors = described["error"]
    good = [i for i, error in enumerate(errors) if not error]
    for i, error in enumerate(errors):
        if error:
            name = described[i]["path"] or described[i]["id"]
            logger.warning("skipping %s: %s", name, error)
            report.skipped.append((name, error))
    return combined.select(good).remove_columns("error")


def _inode(path: str):
    """(device, inode) of what ``path`` points to; a broken link stands for itself (its read reports it)."""
    try:
        stat = os.stat(path)
    except OSError:
        return path
    return stat.st_dev, stat.st_ino


def default_normalizer(source: str | os.PathLike) -> TextNormalizer:
    """The transcript normalisation a source is written for: LibriSpeech's English style (:data:`LIBRISPEECH`) for a
    local LibriSpeech or Libri-light tree and for the Hub's ``librispeech_asr``; ``TextNormalizer()`` (NFC, any
    script, lower case, punctuation to spaces) for everything else, multilingual LibriSpeech included."""
    source = os.fspath(source)
    if not os.path.exists(source):
        return LIBRISPEECH if source.rstrip("/").rsplit("/", 1)[-1].lower() == "librispeech_asr" else TextNormalizer()
    if os.path.isfile(source) or _datasets_folder_kind(source) is not None:
        return TextNormalizer()
    root = source
    for wrapper in ("LibriSpeech", "librispeech_finetuning"):
        if os.path.isdir(os.path.join(root, wrapper)) and not _has_audio_directly(root):
            root = os.path.join(root, wrapper)
            break
    if os.path.isdir(os.path.join(root, "1h")) or _librispeech_splits(root) or _is_split_folder(root):
        return LIBRISPEECH
    return TextNormalizer()


def _datasets_folder_kind(folder: str) -> str | None:
    """``"disk"`` for a ``save_to_disk`` folder, ``"datasets"`` for a folder ``datasets.load_dataset`` reads (a
    README.md with ``configs:`` in its YAML, metadata files of an audiofolder, parquet/arrow data files, at the top
    or one folder down), None for anything else (a speech tree this module scans itself)."""
    if not os.path.isdir(folder):
        return None
    names = set(os.listdir(folder))
    if names & {"state.json", "dataset_dict.json"}:
        return "disk"
    readme = os.path.join(folder, "README.md")
    if os.path.isfile(readme):
        with open(readme, encoding="utf-8", errors="replace") as handle:
            head = handle.read(100_000)
        if head.startswith("---") and re.search(r"^configs:", head.split("\n---", 1)[0], re.MULTILINE):
            return "datasets"
    for name in sorted(names):
        path = os.path.join(folder, name)
        inside = os.listdir(path) if os.path.isdir(path) else []
        if any(n in _METADATA_FILES or n.endswith((".parquet", ".arrow")) for n in [name, *inside]):
            return "datasets"
    return None


def _load_datasets_source(source: str, config: str | None, split: str | None, kwargs: dict) -> datasets.Dataset:
    """One split (``+`` joins several) of a Hub dataset or a local datasets folder, as a ``datasets.Dataset``."""
    kind = _datasets_folder_kind(source) if os.path.exists(source) else None
    if kind == "disk":
        if config is not None:
            raise ValueError(f"{source} is a save_to_disk folder: it has no configuration (got {config!r})")
        loaded = datasets.load_from_disk(source)
        return _pick_splits(source, loaded, split) if isinstance(loaded, datasets.DatasetDict) else loaded
    if kind == "datasets":
        # datasets resolves the configuration (README.md YAML, data_dir), its splits and data files.
        builder = datasets.load_dataset_builder(source, config, **kwargs)
        if builder.name == "audiofolder":
            return _audiofolder_split(source, builder, split)
    hub = datasets.load_dataset(source, config, split=split, **kwargs)
    if not isinstance(hub, datasets.Dataset):  # a DatasetDict (no split given) or a streaming dataset
        raise ValueError(f"{source}: pass split= (one of {list(hub) if isinstance(hub, dict) else '?'}); "
                         "streaming datasets are not supported")
    return hub


def _pick_splits(source: str, splits, split: str | None) -> datasets.Dataset:
    """``splits[split]``, several joined by '+' concatenated; a clear error naming the available ones."""
    names = split.split("+") if split else []
    missing = [name for name in names if name not in splits]
    if not names or missing:
        raise ValueError(f"{source}: pass a split, one of {sorted(splits)} (join several with '+'), got {split!r}")
    parts = [splits[name] for name in names]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _audiofolder_split(source: str, builder, split: str | None) -> datasets.Dataset:
    """The rows of a local audiofolder split (``builder`` has resolved its configuration's files): each metadata
    file's rows, with ``audio = {"bytes": None, "path": the file_name beside the metadata file}`` and ``id`` (that
    path relative to ``source``, no extension) unless the metadata has one; without metadata, the audio files.
    datasets' own AudioFolder cannot be built without torchcodec (its Audio feature encodes every path)."""
    data_files = {str(name): [str(f) for f in files] for name, files in (builder.config.data_files or {}).items()}
    wanted = [name for name in (split.split("+") if split else []) if name in data_files]
    splits = dict.fromkeys(data_files)
    for name in wanted:
        metadata = [f for f in data_files[name] if os.path.basename(f) in _METADATA_FILES]
        tables = []
        for path in metadata:
            read = {".csv": datasets.Dataset.from_csv, ".jsonl": datasets.Dataset.from_json}.get(
                os.path.splitext(path)[1], datasets.Dataset.from_parquet)
            table = read(path, keep_in_memory=True)
            if "file_name" not in table.column_names:
                raise ValueError(f"{path}: audiofolder metadata needs a file_name column, has {table.column_names}")
            audio_paths = [os.path.join(os.path.dirname(path), f) for f in table["file_name"]]
            tables.append(_with_audio_paths(table.remove_columns("file_name"), audio_paths, source))
        if not metadata:  # unlabelled audio
            audio_paths = sorted(f for f in data_files[name] if f.lower().endswith(AUDIO_EXTENSIONS))
            tables.append(_with_audio_paths(datasets.Dataset.from_dict({}), audio_paths, source))
        splits[name] = tables[0] if len(tables) == 1 else datasets.concatenate_datasets(tables)
    return _pick_splits(source, splits, split)


def _with_audio_paths(table: datasets.Dataset, audio_paths: list[str], source: str) -> datasets.Dataset:
    if not table.column_names:
        table = datasets.Dataset.from_dict({"_": [None] * len(audio_paths)}).remove_columns("_")
    table = table.add_column("audio", [{"bytes": None, "path": p} for p in audio_paths],
                             feature=HUB_FEATURES["audio"])
    if "id" not in table.column_names:
        table = table.add_column("id", [os.path.splitext(os.path.relpath(p, source))[0] for p in audio_paths])
    return table


def _resolve_local_folders(root: str, split: str | None) -> list[str]:
    """The folders to scan for one local source, following the layouts in the module docstring."""
    if os.path.isfile(root):
        return [root]
    for wrapper in ("LibriSpeech", "librispeech_finetuning"):  # what the archives unpack to
        if os.path.isdir(os.path.join(root, wrapper)) and not _has_audio_directly(root):
            root = os.path.join(root, wrapper)
            break
    if os.path.isdir(os.path.join(root, "1h")):  # "9h" may be absent (corpus.subsets writes only 1h's folds)
        return _libri_light_folders(root, split)
    splits = _librispeech_splits(root)
    if splits:
        if split is None:
            raise ValueError(f"{root} is a LibriSpeech root: pass split=, one of {splits} (join several with '+')")
        wanted = split.split("+")
        missing = [name for name in wanted if name not in splits]
        if missing:
            raise ValueError(f"{root}: no split(s) {missing}; available: {splits}")
        return [os.path.join(root, name) for name in wanted]
    return [root]  # a split folder, one Libri-light fold, or a plain folder of audio files


def _libri_light_folders(root: str, subset: str | None) -> list[str]:
    """Folders of a Libri-light ``librispeech_finetuning`` subset: 10min[:K], 1h, 9h or 10h."""
    one_hour = [os.path.join(root, "1h", str(fold)) for fold in range(6)]
    if subset is not None and subset.startswith("10min"):
        fold = subset.partition(":")[2] or "0"
        if not fold.isdigit() or not 0 <= int(fold) <= 5:
            raise ValueError(f"Libri-light subset {subset!r}: the 10 min fold must be 0..5 (e.g. '10min:3')")
        return [one_hour[int(fold)]]
    folders = {"1h": one_hour, "9h": [os.path.join(root, "9h")], "10h": one_hour + [os.path.join(root, "9h")]}
    if subset not in folders:
        raise ValueError(f"{root} is a Libri-light fine-tuning root: pass split=, one of {LIBRI_LIGHT_SUBSETS}")
    missing = [folder for folder in folders[subset] if not os.path.isdir(folder)]
    if missing:
        raise FileNotFoundError(f"Libri-light subset {subset!r}: missing folder(s) {missing}")
    return folders[subset]


def _has_audio_directly(folder: str) -> bool:
    return any(name.lower().endswith(AUDIO_EXTENSIONS) for name in os.listdir(folder))


def _librispeech_splits(root: str) -> list[str]:
    """Sub-folders of ``root`` laid out as ``<split>/<speaker>/<chapter>/*.trans.txt``; [] if none."""
    splits = []
    for name in sorted(os.listdir(root)):
        split_dir = os.path.join(root, name)
        if os.path.isdir(split_dir) and _is_split_folder(split_dir):
            splits.append(name)
    return splits


def _is_split_folder(folder: str) -> bool:
    """True when ``folder/<speaker>/<chapter>/`` holds a ``*.trans.txt`` (checks the first chapter found)."""
    for speaker in sorted(os.scandir(folder), key=lambda e: e.name):
        if not speaker.is_dir():
            continue
        for chapter in sorted(os.scandir(speaker.path), key=lambda e: e.name):
            if chapter.is_dir():
                return any(name.endswith(".trans.txt") for name in os.listdir(chapter.path))
        return False
    return False


def _read_transcripts(folder: str, file_names: list[str]) -> dict[str, str]:
    """``{utterance id: text as written}`` from the ``*.trans.txt`` files of one folder (lines "ID TEXT"), in
    any encoding :func:`_read_text_lines` reads."""
    transcripts = {}
    for name in file_names:
        if not name.endswith(".trans.txt"):
            continue
        for line in _read_text_lines(os.path.join(folder, name)):
            utt_id, _, text = line.strip().partition(" ")
            if utt_id:
                transcripts[utt_id] = text  # load_speech_dataset normalises it
    return transcripts


_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _read_text_lines(path: str) -> list[str]:
    """The lines of a text file: UTF-8, or the encoding its byte-order mark names (UTF-8, UTF-16; the mark is
    dropped). A file that is not valid UTF-8 is read as Windows-1252 (what Windows editors save; Latin-1 where
    Windows-1252 leaves a byte undefined), and logged with its name and the line of the first bad byte."""
    with open(path, "rb") as handle:
        data = handle.read()
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding).splitlines()
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}: starts with a {encoding} byte-order mark but is not {encoding} "
                                 f"(byte {error.start}: {error.reason})") from error
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        byte = data[error.start:error.start + 1].hex()
        for fallback in ("cp1252", "latin-1"):
            try:
                text = data.decode(fallback)
                break
            except UnicodeDecodeError:  # cp1252 leaves 5 bytes undefined; Latin-1 decodes every byte
                continue
        logger.warning("%s: not UTF-8 (line %d, byte 0x%s); read as %s", path, line, byte, fallback)
        return text.splitlines()


def _header_problem(file_samples, sampling_rate, channels, target_sr, min_samples, max_channels) -> str | None:
    """Why a file with this header cannot be used, or None when it can."""
    if file_samples == 0:
        return "empty (no samples)"
    if max_channels is not None and channels > max_channels:
        return f"has {channels} channels, expected at most {max_channels}"
    num_samples = resampled_length(file_samples, sampling_rate, target_sr)
    if num_samples < min_samples:
        return f"too short: {num_samples} samples at {target_sr} Hz (< {min_samples})"
    return None


def _scan_folder(folder, target_sr, min_samples, max_channels, num_workers, report) -> list[dict]:
    """Rows for every audio file under ``folder`` (or the file itself), sorted by path for a stable order.

    Symbolic links are followed, but every real folder is scanned once and every real file read once: a link
    back to a folder above (a loop) or a second name for a file is logged and skipped."""
    entries = []  # (path, id, text or None)
    if os.path.isfile(folder):
        stem = os.path.splitext(os.path.basename(folder))[0]
        entries.append((folder, stem, None))
    seen_folders, seen_files = {}, {}  # (device, inode) -> the first path it was found at
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        subdirs.sort()
        first = seen_folders.setdefault(_inode(directory), directory)
        if first != directory:
            logger.warning("skipping %s: a symbolic link to %s, already scanned (a loop?)", directory, first)
            subdirs.clear()  # os.walk descends only into what is left in subdirs
            continue
        transcripts = _read_transcripts(directory, files)
        for name in sorted(files):
            if not name.lower().endswith(AUDIO_EXTENSIONS):
                continue
            path = os.path.join(directory, name)
            first = seen_files.setdefault(_inode(path), path)
            if first != path:
                logger.warning("skipping %s: the same file as %s", path, first)
                continue
            stem = os.path.splitext(name)[0]
            if _LIBRISPEECH_ID.match(stem) or transcripts:
                utt_id = stem
            else:  # a plain folder: the relative path keeps ids unique across sub-folders
                utt_id = os.path.splitext(os.path.relpath(path, folder))[0].replace(os.sep, "/")
            text = transcripts.get(stem)
            if text is None and transcripts:
                report.missing_transcripts += 1
                logger.warning("%s: not listed in the *.trans.txt of its folder; text set to ''", path)
            entries.append((path, utt_id, text))

    def probe(path):
        try:
            file_samples, sampling_rate, channels = audio_info(path)
        except AudioError as error:
            return None, error.reason
        problem = _header_problem(file_samples, sampling_rate, channels, target_sr, min_samples, max_channels)
        return (file_samples, sampling_rate), problem

    with ThreadPoolExecutor(max(1, num_workers)) as pool:  # header reads are I/O bound; soundfile drops the GIL
        probes = list(pool.map(probe, [path for path, _, _ in entries]))
    rows = []
    for (path, utt_id, text), (header, problem) in zip(entries, probes):
        if problem is not None:
            logger.warning("skipping %s: %s", path, problem)
            report.skipped.append((path, problem))
            continue
        file_samples, sampling_rate = header
        match = _LIBRISPEECH_ID.match(utt_id)
        rows.append(
            {
                "id": utt_id,
                "path": path,
                "text": text or "",
                "speaker_id": match.group(1) if match else "",
                "duration": file_samples / sampling_rate,
                "num_samples": resampled_length(file_samples, sampling_rate, target_sr),
            }
        )
    return rows
