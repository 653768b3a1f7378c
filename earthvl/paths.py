"""Where paths lead: symbolic links out of a folder that is read, and outputs that overlap what they read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from earthvl.errors import EarthvlError


def leads_out(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether `path`, named inside the folder `root`, leads out of it through a symbolic link (its own or a
    folder's on the way)."""
    return not Path(path).resolve().is_relative_to(Path(root).resolve())


def refuse_overlap(out: str | os.PathLike, what: str, inputs: Mapping[str, str | os.PathLike | None]) -> None:
    """An EarthvlError if the output `out` (`what`, e.g. "output folder") is one of `inputs` (option -> path; None
    left out), lies inside one or holds one: writing there could overwrite what is being read, or mix with it."""
    target = Path(out).resolve()
    for option, path in inputs.items():
        if path is None:
            continue
        source = Path(path).resolve()
        if target == source or target.is_relative_to(source) or source.is_relative_to(target):
            relation = "is" if target == source else "lies inside" if target.is_relative_to(source) else "holds"
            raise EarthvlError(
                f"the {what} {out} {relation} {option} {path}: give an output path apart from the inputs"
            )
