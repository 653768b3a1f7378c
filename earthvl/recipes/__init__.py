"""Training recipes shipped with earthvl: YAML files for `--config`, named by their path under this folder."""

from __future__ import annotations

from pathlib import Path

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
