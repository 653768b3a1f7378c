"""The ChatEarthNet part of the sample world, written in the exact upstream (Zenodo) layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from earthvl.builders.chatearthnet import layout
from earthvl.builders.chatearthnet.generation import caption_statistics, colour_map
from earthvl.builders.chatearthnet.landcover import BACKGROUND
from earthvl.builders.chatearthnet.template import gpt4v_caption, gpt35_caption
from earthvl.sample.files import PngWriter, json_bytes, write_bytes, write_zip
from earthvl.sample.spectra import render_bands
from earthvl.sample.fraction_splits import assign_splits
from earthvl.sample.terrain import BIOMES, Biome, land_cover_map

# independent random streams of one seed
_PLAN, _TILE, _CAPTION, _NODATA = 1, 2, 3, 4
NODATA_FRACTION = 0.03
GPT4V_EVERY = 4
"""One tile in this many (per split) also gets gpt4v captions, as upstream's gpt4v set is a subset."""
IMAGE_ID_EVERY, IMAGE_ID_OFFSET = 11, 5
LIST_CAPTION_EVERY, LIST_CAPTION_OFFSET = 13, 7
"""Upstream quirks reproduced: some records keyed `image_id`, some captions as one-element lists."""


@dataclass(frozen=True)
class SamplePatch:
    """Ground truth of one written patch (not part of the upstream files, which ship no masks)."""

    file_name: str
    split: str
    tile_x: int
    tile_y: int
    patch: str
    label_map: np.ndarray | None
    """The 256 px land-cover map, kept only when asked for (`keep_label_maps`)."""
    nodata: str | None
    """'white' or 'black' for the blank no-data placeholders."""


@dataclass
class ChatEarthNetSample:
    root: Path
    patches: list[SamplePatch] = field(default_factory=list)
    zips: list[Path] = field(default_factory=list)


def plan_tiles(rng: np.random.Generator, count: int) -> list[tuple[int, int, Biome]]:
    """Distinct zoom-13 tiles spread over the biomes, each inside its biome's lon/lat box."""
    seen: set[tuple[int, int]] = set()
    tiles = []
    while len(tiles) < count:
        biome = BIOMES[len(tiles) % len(BIOMES)]
        lat, lon = rng.uniform(*biome.lat_range), rng.uniform(*biome.lon_range)
        xy = layout.tile_for(lat, lon)
        if xy not in seen:
            seen.add(xy)
            tiles.append((*xy, biome))
    return tiles


def iter_tiles(seed: int, tiles: int) -> Iterator[tuple[int, int, int, str, np.ndarray, np.random.Generator]]:
    """(index, tile_x, tile_y, split, 512 px label map, the tile's generator) for each tile of a sample world."""
    plan_rng = np.random.default_rng([seed, _PLAN])
    plan = plan_tiles(plan_rng, tiles)
    splits = assign_splits(plan_rng, tiles, layout.SPLIT_FRACTIONS)
    for t, ((x, y, biome), split) in enumerate(zip(plan, splits)):
        rng = np.random.default_rng([seed, _TILE, t])
        yield t, x, y, split, land_cover_map(rng, biome, layout.TILE_SIZE, layout.TILE_SIZE), rng


def iter_patches(labels: np.ndarray) -> Iterator[tuple[int, str, tuple[slice, slice]]]:
    """(index, `<row><col>` name, pixel window) of the four 256 px patches of a tile."""
    half = layout.PATCH_SIZE
    for p, patch in enumerate(layout.PATCHES):
        row, col = int(patch[0]), int(patch[1])
        yield p, patch, (slice(row * half, (row + 1) * half), slice(col * half, (col + 1) * half))


def caption_rng(seed: int, tile: int, patch: int) -> np.random.Generator:
    return np.random.default_rng([seed, _CAPTION, tile, patch])


def write_chatearthnet(
    root: Path,
    tiles: int,
    seed: int,
    *,
    keep_label_maps: bool = False,
    labels_root: Path | None = None,
    progress: bool = True,
) -> ChatEarthNetSample:
    """Generate `tiles` 512 px tiles (four patches each) under `root` in ChatEarthNet's extracted layout; with
    `labels_root`, also each patch's land-cover map there as a colour PNG named like the patch."""
    nodata_rng = np.random.default_rng([seed, _NODATA])
    n_patches = 4 * tiles
    n_nodata = max(2, round(NODATA_FRACTION * n_patches))
    chosen = nodata_rng.choice(n_patches, n_nodata, replace=False)
    nodata_at = {int(i): ("white", "black")[k % 2] for k, i in enumerate(chosen)}

    sample = ChatEarthNetSample(root=root)
    records: dict[tuple[str, str], list[dict]] = {
        (source, split): [] for source in layout.CAPTION_SOURCES for split in layout.SPLITS
    }
    rank_in_split = dict.fromkeys(layout.SPLITS, 0)
    tile_iter = tqdm(iter_tiles(seed, tiles), total=tiles, desc="ChatEarthNet tiles", disable=not progress)
    with PngWriter() as pngs:
        for t, x, y, split, labels, rng in tile_iter:
            bands = render_bands(rng, labels)
            with_gpt4v = rank_in_split[split] % GPT4V_EVERY == 0
            rank_in_split[split] += 1
            for p, patch, window in iter_patches(labels):
                patch_labels, patch_bands = labels[window].copy(), bands[window]
                nodata = nodata_at.get(4 * t + p)
                if nodata:
                    patch_labels[:] = BACKGROUND
                    patch_bands = np.full_like(patch_bands, 255 if nodata == "white" else 0)
                name = layout.patch_file_name(x, y, patch)
                for g, group in enumerate(layout.BAND_GROUPS):
                    pngs.write(root / layout.image_path(group, name), patch_bands[..., 3 * g : 3 * g + 3])
                stats = caption_statistics(patch_labels)
                rng_caption = caption_rng(seed, t, p)
                records["gpt35", split].append(_record(name, gpt35_caption(stats, rng_caption)))
                if with_gpt4v:
                    records["gpt4v", split].append(_record(name, gpt4v_caption(stats, patch_labels, rng_caption)))
                if labels_root is not None:
                    pngs.write(labels_root / name, colour_map(patch_labels))
                kept = patch_labels if keep_label_maps else None
                sample.patches.append(SamplePatch(name, split, x, y, patch, kept, nodata))
    for (source, split), rows in records.items():
        write_bytes(root / layout.json_path(source, split), json_bytes([_quirk(i, r) for i, r in enumerate(rows)]))
    return sample


def _record(file_name: str, caption: str) -> dict:
    return {"image": file_name, "caption": caption}


def _quirk(index: int, record: dict) -> dict:
    record = dict(record)
    if index % IMAGE_ID_EVERY == IMAGE_ID_OFFSET:
        record = {"image_id": record.pop("image"), **record}
    if index % LIST_CAPTION_EVERY == LIST_CAPTION_OFFSET:
        record["caption"] = [record["caption"]]
    return record


def write_zenodo_zips(root: Path, dest: Path) -> list[Path]:
    """Pack an extracted ChatEarthNet tree into the four zips of the Zenodo record."""
    groups = {"json": layout.JSON_DIR, **layout.IMAGE_DIRS}
    zips = []
    for key, folder in groups.items():
        top = folder.split("/")[0]
        members = [p.relative_to(root).as_posix() for p in sorted((root / folder).rglob("*")) if p.is_file()]
        assert all(m.startswith(top + "/") for m in members)
        zips.append(write_zip(dest / layout.ZIP_NAMES[key], root, members))
    return zips
