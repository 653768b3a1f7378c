"""The sample world: a small, deterministic, learnable stand-in for GAIA and ChatEarthNet in their upstream formats.

`generate_sample` writes it; `sample_corpus` returns its texts (for training tiny tokenizers) without writing.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from earthvl import __version__
from earthvl.builders.chatearthnet.generation import caption_statistics
from earthvl.errors import EarthvlError
from earthvl.builders.chatearthnet.template import gpt35_caption
from earthvl.sample.chatearthnet import (
    ChatEarthNetSample,
    caption_rng,
    iter_patches,
    iter_tiles,
    write_chatearthnet,
    write_zenodo_zips,
)
from earthvl.sample.gaia import GaiaSample, gaia_texts, write_gaia
from earthvl.sample.scenes import write_scenes

CHATEARTHNET_DIR, ZENODO_DIR, GAIA_DIR, MODELS_DIR = "chatearthnet", "chatearthnet_zenodo", "gaia", "models"
SCENES_DIR = "scenes"
LABELS_DIR = "chatearthnet_labels"
"""With `label_maps`: each ChatEarthNet patch's land-cover map (ChatEarthNet colour PNG, named like the patch)."""
MANIFEST = "sample_world.json"
MIN_ITEMS, MAX_ITEMS = 3, 50_000
"""At least one tile/image per split; at most about the size of the real ChatEarthNet (40,872 tiles)."""


@dataclass
class SampleWorld:
    root: Path
    chatearthnet: ChatEarthNetSample
    gaia: GaiaSample
    zips: list[Path]
    models: dict[str, Path]
    scenes: Path


def _check_count(name: str, value: int) -> None:
    if not MIN_ITEMS <= value <= MAX_ITEMS:
        raise EarthvlError(
            f"{name} must be between {MIN_ITEMS} (one per split: train, validation, test) and {MAX_ITEMS}, got {value}"
        )


def _prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise EarthvlError(f"output path {out} exists and is not a folder")
    owned = [out / name for name in (CHATEARTHNET_DIR, ZENODO_DIR, GAIA_DIR, SCENES_DIR, MODELS_DIR, LABELS_DIR, MANIFEST)]
    present = [p for p in owned if p.exists()]
    if present and not overwrite:
        raise EarthvlError(f"{out} already holds a sample world ({present[0].name}); pass --overwrite to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".earthvl-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise EarthvlError(f"cannot write to output folder {out}: {error.strerror or error}") from error
    for path in present:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def generate_sample(
    out: str | Path,
    tiles: int = 64,
    seed: int = 0,
    *,
    gaia_images: int | None = None,
    zip_archives: bool = False,
    models: bool = False,
    overwrite: bool = False,
    keep_label_maps: bool = False,
    label_maps: bool = False,
    progress: bool = True,
) -> SampleWorld:
    """Write the sample world under `out`: `chatearthnet/` (extracted Zenodo layout), `gaia/` (metadata JSON and
    img2dataset shards), `scenes/` (an imagefolder of the ChatEarthNet test patches by dominant land-cover class),
    with `zip_archives` also `chatearthnet_zenodo/*.zip`, with `models` also the tiny models under `models/`.
    Byte-identical for the same arguments. `keep_label_maps` keeps each patch's land-cover map in the returned object
    (ground truth the upstream files do not ship; about 64 KB a patch); `label_maps` writes them under
    `chatearthnet_labels/` as ChatEarthNet colour PNGs, for `earthvl eval faithfulness --labels`."""
    gaia_images = tiles if gaia_images is None else gaia_images
    _check_count("tiles", tiles)
    _check_count("gaia_images", gaia_images)
    if seed < 0:
        raise EarthvlError(f"seed must be a non-negative integer, got {seed}")
    out = Path(out)
    _prepare_output(out, overwrite)
    try:
        chatearthnet = write_chatearthnet(
            out / CHATEARTHNET_DIR,
            tiles,
            seed,
            keep_label_maps=keep_label_maps,
            labels_root=out / LABELS_DIR if label_maps else None,
            progress=progress,
        )
        gaia = write_gaia(out / GAIA_DIR, gaia_images, seed, progress=progress)
        scenes = write_scenes(out / SCENES_DIR, chatearthnet, seed, tiles)
        zips = write_zenodo_zips(out / CHATEARTHNET_DIR, out / ZENODO_DIR) if zip_archives else []
        built: dict[str, Path] = {}
        if models:
            built = _build_models(out / MODELS_DIR, seed, progress)
    except OSError as error:
        raise EarthvlError(f"writing the sample world failed at {error.filename or out}: {error.strerror or error}") from error
    manifest = {
        "earthvl_version": __version__,
        "seed": seed,
        "tiles": tiles,
        "gaia_images": gaia_images,
        "chatearthnet_patches": _per_split(p.split for p in chatearthnet.patches),
        "chatearthnet_nodata_patches": sum(p.nodata is not None for p in chatearthnet.patches),
        "gaia_records": _per_split(s.split for s in gaia.scenes),
        "gaia_failed_downloads": sum(not s.downloaded for s in gaia.scenes),
        "scenes": scenes,
        "zips": [z.name for z in zips],
        "models": sorted(built),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return SampleWorld(out, chatearthnet, gaia, zips, built, out / SCENES_DIR)


def _build_models(folder: Path, seed: int, progress: bool) -> dict[str, Path]:
    from transformers.utils import logging

    from earthvl.models.tiny import build_all  # lazily: transformers is slow to import and only --models needs it

    was_enabled = logging.is_progress_bar_enabled()
    if not progress:
        logging.disable_progress_bar()
    try:
        return build_all(folder, corpus=sample_corpus(seed))
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def _per_split(splits: Iterable[str]) -> dict[str, int]:
    counts = Counter(splits)
    return {split: counts[split] for split in ("train", "validation", "test")}


def sample_corpus(seed: int = 0, tiles: int = 32) -> list[str]:
    """The texts of a sample world (ChatEarthNet captions of `tiles` tiles and every GAIA text), without writing."""
    texts = []
    for t, _, _, _, labels, _ in iter_tiles(seed, tiles):
        for p, _, window in iter_patches(labels):
            texts.append(gpt35_caption(caption_statistics(labels[window]), caption_rng(seed, t, p)))
    return texts + gaia_texts()


__all__ = ["SampleWorld", "generate_sample", "sample_corpus"]
