"""Pushing built dataset folders and trained model folders to the Hugging Face Hub."""

from __future__ import annotations

import bz2
import fnmatch
import io
import lzma
import pickletools
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, metadata_load
from huggingface_hub.errors import HFValidationError, HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

from earthvl.cards.hub_metrics import eval_results
from earthvl.cards.model import render_model_card
from earthvl.cards.results_files import EVAL_DIR, load_results
from earthvl.data import folder_configs
from earthvl.dataset_folder import CARD_FILE, DATA_DIR, REPORT_FILE
from earthvl.errors import EarthvlError
from earthvl.paths import leads_out
from earthvl.training_output import ADAPTER_CONFIG_FILE, CONFIG_FILE, MERGED_DIR, read_training_output
from earthvl.models.loading import PICKLE_SUFFIXES

IGNORE_PATTERNS = [".*", "*/.*", "checkpoint-*", "*/checkpoint-*", "*.partial"]
"""Never sent (fnmatch patterns, `*` spans folders): hidden files and folders, checkpoints, unfinished files."""
MODEL_MARKERS = (CONFIG_FILE, ADAPTER_CONFIG_FILE)
PICKLE_HEAD_BYTES = 64
"""How much of a file (or of what a compressed file inflates to) is read to tell a pickle."""
COMPRESSED_HEAD_BYTES = 2**20
"""How much of a compressed file is inflated, at most, for its first PICKLE_HEAD_BYTES."""
_DECOMPRESSORS = (
    (b"\x1f\x8b", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),  # gzip
    (b"\x78", zlib.decompressobj),  # zlib, as joblib writes it
    (b"BZh", bz2.BZ2Decompressor),
    (b"\xfd7zXZ\x00", lzma.LZMADecompressor),
    (b"\x5d\x00\x00", lzma.LZMADecompressor),  # legacy .lzma
)
ADAPTER_FILES = (ADAPTER_CONFIG_FILE, "adapter_model.safetensors")
SPACE_KEYS = ("sdk", "app_file")
"""What a Space's README front matter must say: how the Hub runs it."""
BYTECODE_DIR = "__pycache__"


def check_repo_id(repo_id: str, option: str) -> None:
    """A ValueError naming `option` unless `repo_id` is a valid Hub repository id (huggingface_hub's own rules)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{option}: {error}") from error


def check_dataset_folder(folder: str | Path) -> Path:
    """A built dataset folder, or an error saying what is missing: its card (with valid YAML), report and shards."""
    folder = Path(folder)
    missing = [name for name in (CARD_FILE, REPORT_FILE, DATA_DIR) if not (folder / name).exists()]
    if missing:
        raise EarthvlError(f"{folder} is not a built earthvl dataset folder: {', '.join(missing)} missing")
    folder_configs(folder)
    return folder


def folder_kind(folder: str | Path) -> str:
    """'dataset' for a built dataset folder, 'model' for a trained model folder; an error if it looks like both
    (say which with `repo_type`) or neither."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EarthvlError(f"{folder} is not a folder")
    dataset = (folder / REPORT_FILE).is_file() or (folder / DATA_DIR).is_dir()
    model = any((folder / name).is_file() for name in MODEL_MARKERS)
    if dataset and model:
        raise EarthvlError(
            f"{folder} holds both a built dataset ({REPORT_FILE} or {DATA_DIR}/) and a model (config.json or "
            "adapter_config.json): say which to publish with --repo_type dataset or --repo_type model"
        )
    if not (dataset or model):
        raise EarthvlError(
            f"{folder} is not a built earthvl dataset folder ({CARD_FILE}, {REPORT_FILE}, {DATA_DIR}/) nor a trained "
            "model folder (config.json or adapter_config.json)"
        )
    return "dataset" if dataset else "model"


@contextmanager
def _hub_errors(repo_id: str) -> Iterator[None]:
    """The Hub client's failures as EarthvlErrors naming `repo_id` (never the token)."""
    try:
        yield
    except OfflineModeIsEnabled as error:
        raise EarthvlError(f"cannot publish to {repo_id}: HF_HUB_OFFLINE is set") from error
    except HfHubHTTPError as error:
        raise EarthvlError(f"the Hub refused the upload to {repo_id}: {error}") from error
    except Exception as error:  # the HTTP client's own connection errors (DNS, refused, timeouts) are not OSErrors
        raise EarthvlError(f"cannot publish to {repo_id}: {type(error).__name__}: {error}") from error


def publish_dataset(
    folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None, commit_message: str | None = None
) -> str:
    """Upload a built dataset folder to the Hub dataset repo `repo_id` (created if needed); the commit's URL.

    The token comes from `token`, else `HF_TOKEN` or the `hf auth login` cache; it is never printed."""
    folder = check_dataset_folder(folder)
    _refuse_pickles(folder, sendable_files(folder))
    api = HfApi(token=token)
    with _hub_errors(repo_id):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(  # sends what `sendable_files` checked: the same IGNORE_PATTERNS
            folder_path=folder,
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=commit_message or f"Upload {folder.name} built with earthvl",
            ignore_patterns=IGNORE_PATTERNS,
        )
    return str(getattr(commit, "commit_url", commit))


def sendable_files(folder: Path) -> dict[str, Path]:
    """The files of `folder` that may be sent, as path in the repo -> local file: all but `IGNORE_PATTERNS`. A link
    to a file inside the folder is sent as that file; a link to a folder inside it is not followed (its target is
    sent under its own name). An error naming every symbolic link that leads out of the folder."""
    files: dict[str, Path] = {}
    leaving = []
    for path in sorted(folder.rglob("*")):  # does not descend into linked folders
        name = path.relative_to(folder).as_posix()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in IGNORE_PATTERNS):
            continue
        if path.is_symlink() and leads_out(path, folder):
            leaving.append(name)
        elif path.is_file():
            files[name] = path
    if leaving:
        raise EarthvlError(
            f"{folder} holds symbolic links that lead out of it, which earthvl does not publish: {', '.join(leaving)}; "
            "replace them with copies of what they point to, or remove them"
        )
    return files


def pickled(path: Path) -> bool:
    """Whether the file at `path` holds a pickle, whatever its name: a pickle stream (protocol 2 or later, as
    `torch.save` and joblib write), a zip with a `.pkl` member (`torch.save`'s container), or such a stream
    compressed with gzip, zlib, bz2 or xz (joblib's compressed dumps)."""
    with open(path, "rb") as file:
        head = file.read(PICKLE_HEAD_BYTES)
        if _pickle_stream(head):
            return True
        if head.startswith(b"PK"):
            try:
                with zipfile.ZipFile(file) as archive:
                    return any(name.endswith(".pkl") for name in archive.namelist())
            except (zipfile.BadZipFile, OSError, ValueError):
                return False
        for magic, decompressor in _DECOMPRESSORS:
            if head.startswith(magic):
                file.seek(0)
                try:
                    inflated = decompressor().decompress(file.read(COMPRESSED_HEAD_BYTES), PICKLE_HEAD_BYTES)
                    return _pickle_stream(inflated)
                except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
                    return False
    return False


def _pickle_stream(head: bytes) -> bool:
    """Whether `head` opens a pickle: the PROTO opcode of protocol 2-5, then valid opcodes (a safetensors header
    length can begin with the same two bytes, never with what follows)."""
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        return False
    opcodes = 0
    try:
        for _ in pickletools.genops(io.BytesIO(head)):
            opcodes += 1
            if opcodes == 4:
                return True
    except ValueError:  # an unknown opcode, or an argument cut off where `head` ends
        return opcodes >= 3
    return True  # a short pickle that ended with STOP


def _refuse_pickles(folder: Path, files: dict[str, Path]) -> None:
    """An error naming the pickled files among `files`, by suffix (`PICKLE_SUFFIXES`) or by content (`pickled`):
    pickles run code when loaded, so nothing is sent."""
    found = [name for name, path in files.items() if name.lower().endswith(PICKLE_SUFFIXES) or pickled(path)]
    if found:
        raise EarthvlError(
            f"{folder} holds pickled files, which earthvl does not publish (safetensors only): {', '.join(found)}; "
            "delete them or convert the weights to safetensors"
        )


def model_files(folder: str | Path, *, merged: bool = False) -> dict[str, Path]:
    """What a model repo gets from a trained model folder: path in the repo -> local file.

    Everything but hidden files, `checkpoint-*` folders, unfinished files and `merged/`; with `merged`, the files of
    `merged/` (the adapter folded into its base) take the root instead of the adapter. An error for a folder that
    is not a trained model, has no safetensors weights, or would send pickled files (named)."""
    folder = Path(folder)
    read_training_output(folder, merged=merged)
    files = {name: path for name, path in sendable_files(folder).items() if not name.startswith(f"{MERGED_DIR}/")}
    if merged:
        files = {name: path for name, path in files.items() if name not in ADAPTER_FILES}
        files.update(sendable_files(folder / MERGED_DIR))
    _refuse_pickles(folder, files)
    if not any(name.endswith(".safetensors") for name in files):
        raise EarthvlError(f"{folder} has no safetensors weights to publish")
    return files


def _metrics(results: Sequence[Any] | None) -> dict[tuple, Any]:
    """Eval results as (task, dataset, config, split, revision, metric name) -> value."""
    return {(*r.unique_identifier, r.metric_name): r.metric_value for r in results or ()}


def model_card(
    folder: Path, repo_id: str, results: Sequence[str | Path | Mapping[str, Any]], *, merged: bool = False
) -> bytes:
    """The card to push: the folder's earthvl card (checked against `repo_id`, `merged` and `results`), else one
    rendered from `results`; an error telling what to run when there is neither."""
    path = folder / CARD_FILE
    try:
        card = ModelCard.load(path, ignore_metadata_errors=True) if path.is_file() else None
    except (ValueError, yaml.YAMLError) as error:
        raise EarthvlError(f"{path} has unreadable YAML metadata: {error}") from error
    if card is None or "earthvl" not in (card.data.tags or []):
        if not results:
            found = f"its {CARD_FILE} is not an earthvl model card" if card else f"it has no {CARD_FILE}"
            raise EarthvlError(
                f"{folder} cannot be published without a model card ({found}): run `earthvl card --model_dir {folder} "
                f"--model_id {repo_id} --results RESULTS.json ...` first, or pass the results files with --results"
            )
        return str(render_model_card(results, model_dir=folder, model_id=repo_id, merged=merged)).encode("utf-8")
    merged_option = " --merged" if merged else ""
    rerun = f"rerun `earthvl card --model_dir {folder} --model_id {repo_id}{merged_option} --results ...`"
    if card.data.model_name != repo_id:
        raise EarthvlError(f"{path} was written for {card.data.model_name!r}, not {repo_id!r}: {rerun}")
    library = "peft" if read_training_output(folder, merged=merged).adapter else "transformers"
    if card.data.library_name != library:
        what = "the merged model" if merged else "the adapter" if library == "peft" else "a full model"
        raise EarthvlError(f"{path} does not describe {what} being published: {rerun}")
    if results and _metrics(card.data.eval_results) != _metrics(eval_results(load_results(results), repo_id)):
        raise EarthvlError(f"the metrics in {path} differ from those of the results files: {rerun}")
    return path.read_bytes()


def publish_model(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    results: Sequence[str | Path | Mapping[str, Any]] = (),
    merged: bool = False,
) -> str:
    """Upload a trained model folder (`earthvl train` output) to the Hub model repo `repo_id` in one commit; the
    commit's URL.

    Sent: the safetensors weights, config, processor and tokenizer files, generation config, earthvl's side files
    (training_args.json, captioning.json, vision.json, ...), the card (`README.md`) and the results files under
    `eval/`. The card is the folder's own if `earthvl card` wrote it, else rendered from `results`. `results` replace
    the folder's `eval/`. Never sent: checkpoints, hidden files, `merged/` (unless `merged`: then its model replaces
    the adapter), and nothing at all if the folder holds pickled files. The token comes from `token`, else
    `HF_TOKEN` or the `hf auth login` cache; it is never printed."""
    folder = Path(folder)
    files = model_files(folder, merged=merged)
    loaded = load_results(results)
    card = model_card(folder, repo_id, results, merged=merged)
    files.pop(CARD_FILE, None)
    if loaded:
        files = {name: path for name, path in files.items() if not name.startswith(f"{EVAL_DIR}/")}
    operations = [
        CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card),
        *(CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()),
        *(CommitOperationAdd(path_in_repo=f"{EVAL_DIR}/{r.name}", path_or_fileobj=r.content()) for r in loaded),
    ]
    message = commit_message or f"Upload {folder.name} trained with earthvl"
    return _commit(repo_id, operations, message, repo_type="model", private=private, token=token)


def check_space_folder(folder: str | Path) -> dict[str, Any]:
    """The front matter of a Space folder's README.md, or an error naming what is missing: the card, its `sdk` and
    `app_file`, or the app file itself."""
    folder = Path(folder)
    card = folder / CARD_FILE
    if not card.is_file():
        raise EarthvlError(f"{folder} is not a Space folder: it has no {CARD_FILE}")
    try:
        meta = metadata_load(card) or {}
    except (ValueError, yaml.YAMLError) as error:
        raise EarthvlError(f"{card} has unreadable YAML front matter: {error}") from error
    missing = [key for key in SPACE_KEYS if not meta.get(key)]
    if missing:
        raise EarthvlError(f"{folder} is not a Space folder: the front matter of {card} has no {', '.join(missing)}")
    if not (folder / str(meta["app_file"])).is_file():
        raise EarthvlError(f"{folder} is not a Space folder: its app_file {meta['app_file']} is missing")
    return meta


def space_files(folder: str | Path) -> dict[str, Path]:
    """What a Space repo gets from a Space folder: path in the repo -> local file. Everything but hidden files,
    checkpoints, unfinished files and Python bytecode; an error naming any pickled files."""
    folder = Path(folder)
    files = {
        name: path
        for name, path in sendable_files(folder).items()
        if BYTECODE_DIR not in name.split("/") and not name.endswith(".pyc")
    }
    _refuse_pickles(folder, files)
    return files


def publish_space(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a Space folder (`earthvl.space.folder.write_space` output) to the Hub Space `repo_id` (created with the
    front matter's SDK if needed) in one commit; the commit's URL.

    Never sent: hidden files, bytecode, checkpoints, and nothing at all if the folder holds pickled files. The token
    comes from `token`, else `HF_TOKEN` or the `hf auth login` cache; it is never printed."""
    folder = Path(folder)
    meta = check_space_folder(folder)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in space_files(folder).items()
    ]
    message = commit_message or f"Upload {folder.name} written with earthvl"
    return _commit(repo_id, operations, message, repo_type="space", private=private, token=token, space_sdk=meta["sdk"])


def _commit(
    repo_id: str,
    operations: list[CommitOperationAdd],
    message: str,
    *,
    repo_type: str,
    private: bool,
    token: str | None,
    **repo_options: Any,
) -> str:
    """Create the repo if needed and push `operations` in one commit; the commit's URL."""
    api = HfApi(token=token)
    with _hub_errors(repo_id):
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **repo_options)
        commit = api.create_commit(repo_id, operations=operations, commit_message=message, repo_type=repo_type)
    return str(getattr(commit, "commit_url", commit))
