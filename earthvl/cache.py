"""Where earthvl keeps what it downloads or builds once: `$EARTHVL_CACHE`, default `~/.cache/earthvl`."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The earthvl cache folder (not created here)."""
    return Path(os.environ.get("EARTHVL_CACHE") or "~/.cache/earthvl").expanduser()
