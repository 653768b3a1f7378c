"""Pushing built folders to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from earthvl.builders.folder import CARD_FILE, DATA_DIR, REPORT_FILE
from earthvl.data import folder_configs
from earthvl.errors import EarthvlError

IGNORE_PATTERNS = [".*", "**/.*", "*.partial", "**/*.partial"]
"""Hidden scratch files and unfinished shards never leave the machine."""


def check_dataset_folder(folder: str | Path) -> Path:
    """A built dataset folder, or an error saying what is missing: its card (with valid YAML), report and shards."""
    folder = Path(folder)
    missing = [name for name in (CARD_FILE, REPORT_FILE, DATA_DIR) if not (folder / name).exists()]
    if missing:
        raise EarthvlError(f"{folder} is not a built earthvl dataset folder: {', '.join(missing)} missing")
    folder_configs(folder)
    return folder


def publish_dataset(
    folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None, commit_message: str | None = None
) -> str:
    """Upload a built dataset folder to the Hub dataset repo `repo_id` (created if needed); the commit's URL.

    The token comes from `token`, else `HF_TOKEN` or the `hf auth login` cache; it is never printed."""
    folder = check_dataset_folder(folder)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=commit_message or f"Upload {folder.name} built with earthvl",
            ignore_patterns=IGNORE_PATTERNS,
        )
    except OfflineModeIsEnabled as error:
        raise EarthvlError(f"cannot publish to {repo_id}: HF_HUB_OFFLINE is set") from error
    except HfHubHTTPError as error:
        raise EarthvlError(f"the Hub refused the upload to {repo_id}: {error}") from error
    except Exception as error:  # the HTTP client's own connection errors (DNS, refused, timeouts) are not OSErrors
        raise EarthvlError(f"cannot publish to {repo_id}: {type(error).__name__}: {error}") from error
    return str(getattr(commit, "commit_url", commit))
