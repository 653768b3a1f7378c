"""How a card names models: Hub ids told from local paths, tiny models by their names."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


def is_hub_id(name: str | None) -> bool:
    """Whether `name` reads as an ORG/NAME Hub repo id (not a local path or a tiny model name)."""
    if not name or "/" not in name or Path(name).exists() or name.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def display_name(name: str) -> str:
    """A tiny model's cache folder as its name (`.../tiny-blip2-v2` -> `tiny-blip2`); anything else unchanged."""
    from earthvl.models.tiny import TINY_MODELS, TINY_MODELS_VERSION

    tiny = Path(name).name.removesuffix(f"-v{TINY_MODELS_VERSION}")
    return tiny if tiny in TINY_MODELS else name
