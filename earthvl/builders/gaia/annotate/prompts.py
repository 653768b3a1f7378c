"""The prompts of the model steps, kept as data files (`prompts/<name>.json`) with their provenance and a version;
the version and the text enter every cache key, so an edited prompt is asked again."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from earthvl.errors import EarthvlError

PROMPT_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    provenance: str
    system: str
    user: str
    """A `str.format` template; fields: `article` (and `image_alt`, `credits` for the annotation)."""

    def messages(self, **fields: str) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user.format(**fields)}]

    def key(self) -> dict[str, str]:
        """What identifies this prompt in a cache key."""
        return {"name": self.name, "version": self.version, "system": self.system, "user": self.user}


def load_prompt(name: str, folder: str | Path | None = None) -> Prompt:
    """The prompt `name` from `folder` (default: the shipped prompts), e.g. a user's reworded copy."""
    path = Path(folder or PROMPT_DIR) / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        prompt = Prompt(**{field: str(data[field]) for field in Prompt.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError) as error:
        needs = ", ".join(Prompt.__dataclass_fields__)
        raise EarthvlError(f"prompt file {path} cannot be read: {error!r} (needs {needs})") from None
    try:
        prompt.user.format(article="", image_alt="", credits="")
    except (KeyError, IndexError, ValueError) as error:
        raise EarthvlError(
            f"prompt file {path}: the user template may use only {{article}}, {{image_alt}} and {{credits}} ({error!r})"
        ) from None
    return prompt
