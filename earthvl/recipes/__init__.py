"""Training recipes shipped with earthvl: YAML files for `--config`, named by their path under this folder."""

from __future__ import annotations

from argparse import ArgumentParser
from difflib import get_close_matches
from pathlib import Path

import yaml

from earthvl.errors import EarthvlError

RECIPES = Path(__file__).parent


def recipe_path(config: str) -> str:
    """`config` itself if it is a file, else the shipped recipe it names (`vlm/tiny` -> .../recipes/vlm/tiny.yaml)."""
    if Path(config).is_file():
        return config
    shipped = RECIPES / (config if config.endswith((".yaml", ".yml")) else f"{config}.yaml")
    return str(shipped) if shipped.is_file() else config


def shipped_recipes() -> list[str]:
    """Names of the shipped recipes, e.g. `vlm/geochat`."""
    return sorted(str(p.relative_to(RECIPES).with_suffix("")) for p in RECIPES.rglob("*.yaml"))


def check_recipe_keys(parser: ArgumentParser, config: str) -> None:
    """Refuse a recipe key that no option of `parser` takes (TRL would first fail on something else, or later)."""
    try:
        recipe = yaml.safe_load(Path(config).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise EarthvlError(f"cannot read recipe {config}: {error}") from error
    if not isinstance(recipe, dict):
        raise EarthvlError(f"recipe {config} must be a YAML mapping of option names to values")
    options = {action.dest for action in parser._actions} | {"env"}
    unknown = [key for key in recipe if key not in options]
    if unknown:
        hints = [f"{key!r}" + "".join(f" (did you mean {match!r}?)" for match in get_close_matches(key, options, n=1)) for key in unknown]
        raise EarthvlError(f"recipe {config}: unknown key {', '.join(hints)}; see --help for the options")
