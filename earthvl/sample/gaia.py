"""The GAIA part of the sample world: event scenes whose pixels match their captions and metadata, written as
upstream's metadata JSON plus img2dataset WebDataset shards."""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from earthvl.builders.gaia import layout
from earthvl.builders.chatearthnet.landcover import CLASS_BY_KEY, LAND_COVER_CLASSES
from earthvl.sample.files import add_tar_member, json_bytes, png_bytes, write_bytes
from earthvl.sample.spectra import render_bands
from earthvl.sample.fraction_splits import assign_splits
from earthvl.sample.terrain import BIOMES, land_cover_map, smooth_field

_PLAN, _SCENE, _SHARDS = 11, 12, 13
FAILED_DOWNLOAD_FRACTION = 0.04
NULL_FRACTION = 0.05
COLUMN_ORIENTED_SPLITS = ("validation",)
"""Splits written in pandas' column orientation, the other orientation a real download may have."""
DIRECTIONS = ("east", "north-east", "north", "north-west", "west", "south-west", "south", "south-east")
"""Compass words for angles 0, 45, ... degrees counter-clockwise from east (north is up in every image)."""
SIDES = ("western", "eastern", "northern", "southern")


@dataclass(frozen=True)
class Source:
    host: str
    credits: str
    satellite: tuple[str, ...]
    sensor: str
    resolution: str


SOURCES = {
    "modis": Source("eoimages.gsfc.nasa.gov", "NASA Earth Observatory image using MODIS data from NASA EOSDIS LANCE.",
                    ("NASA Terra", "EOS-Terra", "NASA's Terra", "Aqua"), "MODIS", "Moderate"),
    "oli": Source("eoimages.gsfc.nasa.gov", "NASA Earth Observatory image using Landsat data from the U.S. Geological Survey.",
                  ("Landsat 8", "Landsat-9", "Landsat 9"), "OLI", "High"),
    "msi": Source("www.esa.int", "Contains modified Copernicus Sentinel data, processed by ESA.",
                  ("Sentinel-2A", "Sentinel-2B", "Sentinel 2"), "MSI", "High"),
    "viirs": Source("eoimages.gsfc.nasa.gov", "NASA Earth Observatory image using VIIRS data from NASA EOSDIS LANCE.",
                    ("Suomi NPP", "NOAA-20"), "VIIRS", "Low"),
}


@dataclass(frozen=True)
class Event:
    key: str
    biome: str
    places: tuple[tuple[str, float, float], ...]
    sources: tuple[str, ...]
    tags: tuple[str, ...]
    alt: str
    captions: tuple[str, ...]
    """Templates after the caption prefix; fields {direction}, {side}, {place}, {land}."""


EVENTS: tuple[Event, ...] = (
    Event("flood", "plains", (("Mississippi River, Missouri, United States", 38.2, -90.1),
                              ("Red River, North Dakota, United States", 46.9, -96.8)),
          ("oli", "msi", "modis"), ("floods", "rivers", "severe storms", "water"),
          "Flooding along the river near {place}",
          ("muddy floodwater covering much of the {side} half of the scene, where a swollen river has spilled over {land}.",
           "a river in flood, its brown water spreading across low ground in the {side} part of the image.",
           "floodwaters inundating {land} along the river, with the widest flooding on the {side} side.",
           "an overflowing river whose sediment-laden water has submerged fields in the {side} half near {place}.",
           "extensive flooding: turbid water fills the river valley and spreads over the {side} part of the landscape.")),
    Event("wildfire", "temperate", (("Tarragona, Catalonia, Spain", 41.1, 1.2), ("Landes, Nouvelle-Aquitaine, France", 44.1, -0.8)),
          ("modis", "oli", "msi"), ("fires", "smoke", "land", "human presence"),
          "Smoke from the fire near {place}",
          ("a thick plume of grey smoke from an active wildfire drifting toward the {direction} over {land}.",
           "a wildfire with bright active fire points and a dark burn scar, its smoke blowing toward the {direction}.",
           "grey-white smoke streaming {direction}ward from a fire burning in {land} near {place}.",
           "an active fire front and a smoke plume carried by the wind toward the {direction}.",
           "smoke billowing from a wildfire and spreading toward the {direction} across the scene.")),
    Event("dust", "arid", (("Bodele Depression, Chad", 17.0, 17.8), ("Western Sahara", 24.5, -13.0)),
          ("modis", "viirs"), ("dust and haze", "deserts", "atmosphere"),
          "Dust storm over {place}",
          ("a tan plume of dust blowing toward the {direction} over {land}.",
           "a dust storm lifting sand from the desert and carrying it toward the {direction}.",
           "hazy, sand-coloured dust streaming {direction}ward across the arid landscape near {place}.",
           "a broad dust plume drifting toward the {direction}, partly hiding the {land} below.",
           "windblown dust spreading toward the {direction} over dry terrain.")),
    Event("algal_bloom", "boreal", (("Gulf of Finland, Baltic Sea", 59.9, 24.5), ("Lake Ladoga, Russia", 61.0, 31.5)),
          ("oli", "msi", "modis"), ("water color", "algae", "water"),
          "Algae bloom in {place}",
          ("swirls of bright green algae coloring the open water, with land along the {side} edge.",
           "a phytoplankton bloom tracing green eddies across the water near {place}; the coast lies to the {side} side.",
           "green filaments of an algal bloom drifting on the water, bordered by {land} on the {side} side.",
           "an algal bloom: bright green swirls on dark water, with the shoreline in the {side} part.",
           "blooming cyanobacteria forming green streaks on the water off the {side} shore.")),
    Event("snow", "temperate", (("Innsbruck, Tyrol, Austria", 47.3, 11.4), ("Denver, Colorado, United States", 39.7, -105.0)),
          ("modis", "msi"), ("snow and ice", "land", "winter"),
          "Snow cover near {place}",
          ("fresh snow blanketing most of the land, heaviest in the {side} part, with patches of {land} showing through.",
           "a snow-covered landscape near {place}, the snow cover thickest on the {side} side.",
           "bright white snow over the terrain, especially in the {side} half, around darker {land}.",
           "widespread snow cover with the most extensive snow on the {side} side of the scene.",
           "winter snow covering hills and valleys, concentrated in the {side} part of the image.")),
    Event("urban_sprawl", "temperate", (("Madrid, Community of Madrid, Spain", 40.4, -3.7), ("Lyon, Auvergne-Rhone-Alpes, France", 45.8, 4.8)),
          ("oli", "msi"), ("human presence", "urbanization", "land use"),
          "Urban growth around {place}",
          ("a dense grid of streets and buildings spreading over the {side} part of the scene into surrounding {land}.",
           "urban sprawl: grey city blocks and roads expanding on the {side} side near {place}.",
           "a growing city whose regular street grid covers the {side} half of the image.",
           "new neighbourhoods laid out in a street grid across the {side} part, next to {land}.",
           "built-up areas with straight roads extending over the {side} side of the landscape.")),
)
EVENT_BY_KEY = {e.key: e for e in EVENTS}


@dataclass(frozen=True)
class SampleScene:
    """Ground truth of one GAIA sample image (not part of the upstream files)."""

    record: dict
    split: str
    event: str
    direction: str | None
    side: str | None
    source_xy: tuple[int, int] | None
    downloaded: bool


@dataclass
class GaiaSample:
    root: Path
    scenes: list[SampleScene] = field(default_factory=list)


def _blend(rgb: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int]) -> None:
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    rgb[:] = rgb * (1 - a) + np.asarray(color, np.float32) * a


def _side_mask(side: str, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return {"western": xx < width / 2, "eastern": xx >= width / 2, "northern": yy < height / 2, "southern": yy >= height / 2}[side]


def _plume(rng: np.random.Generator, rgb: np.ndarray, color: tuple[int, int, int], spread: float) -> tuple[str, tuple[int, int]]:
    height, width = rgb.shape[:2]
    k = int(rng.integers(len(DIRECTIONS)))
    angle = math.radians(45 * k)
    dx, dy = math.cos(angle), -math.sin(angle)  # image rows grow southward
    sx = int(width / 2 - dx * width * 0.3 + rng.uniform(-20, 20))
    sy = int(height / 2 - dy * height * 0.3 + rng.uniform(-20, 20))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    along = (xx - sx) * dx + (yy - sy) * dy
    across = -(xx - sx) * dy + (yy - sy) * dx
    sigma = 10 + spread * np.clip(along, 0, None)
    texture = 1 + 0.2 * smooth_field(rng, height, width, 8)
    alpha = 0.95 * np.exp(-(across**2) / (2 * sigma**2)) * (along > 0) * np.exp(-np.clip(along, 0, None) / (1.5 * max(height, width)))
    _blend(rgb, alpha * texture, color)
    return DIRECTIONS[k], (sx, sy)


def _render_event(rng: np.random.Generator, event: Event, rgb: np.ndarray, labels: np.ndarray) -> tuple[str | None, str | None, tuple[int, int] | None]:
    height, width = labels.shape
    side = SIDES[int(rng.integers(len(SIDES)))]
    half = _side_mask(side, height, width)
    blobs = smooth_field(rng, height, width, 5)
    if event.key in ("wildfire", "dust"):
        if event.key == "wildfire":
            direction, (sx, sy) = _plume(rng, rgb, (205, 205, 200), 0.35)
            yy, xx = np.mgrid[0:height, 0:width]
            scar = (xx - sx) ** 2 + (yy - sy) ** 2 < (25 + 10 * blobs) ** 2
            rgb[scar] = (45, 35, 32)
            rgb[scar & (rng.random((height, width)) < 0.05)] = (240, 90, 20)
        else:
            direction, (sx, sy) = _plume(rng, rgb, (214, 184, 134), 0.55)
        return direction, None, (sx, sy)
    if event.key == "flood":
        flooded = (blobs > 0.3) & half
        _blend(rgb, flooded * 0.9, (118, 100, 72))
    elif event.key == "algal_bloom":
        water = ~(half & (blobs > -0.2))  # land lies on the named side
        rgb[water] = (20, 36, 60)
        swirls = np.sin(3.0 * smooth_field(rng, height, width, 6) + 2.0 * blobs) > 0.4
        _blend(rgb, (water & swirls) * 0.8, (64, 176, 98))
    elif event.key == "snow":
        snow = (blobs > -0.4) & half | (blobs > 0.8)
        _blend(rgb, snow * 0.95, (246, 248, 252))
    elif event.key == "urban_sprawl":
        yy, xx = np.mgrid[0:height, 0:width]
        block = int(rng.integers(14, 24))
        city = half & (blobs > -0.8)
        rgb[city] = (150, 146, 142)
        rgb[city & ((xx % block < 3) | (yy % block < 3))] = (60, 60, 64)
    return None, side, None


def _dominant_land(labels: np.ndarray) -> str:
    counts = np.bincount(labels.ravel(), minlength=len(LAND_COVER_CLASSES))
    counts[CLASS_BY_KEY["water"].index] = 0
    return LAND_COVER_CLASSES[int(counts.argmax())].name if counts.any() else "land"


def _scene(seed: int, index: int, event: Event) -> tuple[np.ndarray, dict, str | None, str | None, tuple[int, int] | None]:
    rng = np.random.default_rng([seed, _SCENE, index])
    height = layout.IMAGE_SHORT_SIDE
    width = int(rng.choice((512, 640, 768)))
    biome = next(b for b in BIOMES if b.name == event.biome)
    labels = land_cover_map(rng, biome, height, width)
    rgb = render_bands(rng, labels, noise=2.0, bands=3).astype(np.float32)
    direction, side, source_xy = _render_event(rng, event, rgb, labels)
    place, lat, lon = event.places[int(rng.integers(len(event.places)))]
    words = {"direction": direction, "side": side, "place": place.split(",")[0], "land": _dominant_land(labels)}
    order = rng.permutation(len(event.captions))
    source = SOURCES[event.sources[int(rng.integers(len(event.sources)))]]
    record = {
        "id": 100_000 + index,
        "image_src": f"https://{source.host}/images/{100_000 + index}/{event.key}_{source.sensor.lower()}.jpg",
        "image_alt": event.alt.format(**words),
        "captions": [f"{layout.CAPTION_PREFIX} {event.captions[i].format(**words)}" for i in order],
        "credits": source.credits,
        "location": place,
        "lat": None if rng.random() < NULL_FRACTION else round(lat + rng.uniform(-0.3, 0.3), 4),
        "lon": None if rng.random() < NULL_FRACTION else round(lon + rng.uniform(-0.3, 0.3), 4),
        "tag": [str(t) for t in rng.choice(event.tags, size=min(3, len(event.tags)), replace=False)],
        "resolution": None if rng.random() < NULL_FRACTION else source.resolution,
        "satellite": None if rng.random() < NULL_FRACTION else [source.satellite[int(rng.integers(len(source.satellite)))]],
        "sensor": [source.sensor],
        "modalities": ["optical"] if rng.random() < 0.7 else ["optical", "multispectral"],
    }
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), record, direction, side, source_xy


def write_gaia(root: Path, images: int, seed: int, *, progress: bool = True) -> GaiaSample:
    """Generate `images` event scenes under `root`: `{split}_data.json` and `{split}/NNNNN.tar` shards."""
    plan_rng = np.random.default_rng([seed, _PLAN])
    splits = assign_splits(plan_rng, images, {s: layout.SPLIT_FRACTIONS[s] for s in layout.SPLITS})
    events = [EVENTS[i % len(EVENTS)] for i in plan_rng.permutation(images)]
    n_failed = max(1, round(FAILED_DOWNLOAD_FRACTION * images)) if images >= 10 else 0
    failed = set(plan_rng.choice(images, n_failed, replace=False).tolist())

    sample = GaiaSample(root=root)
    with tqdm(total=images, desc="GAIA scenes", disable=not progress) as bar:
        for split_index, split in enumerate(layout.SPLITS):
            records = []
            shard_rng = np.random.default_rng([seed, _SHARDS, split_index])
            with _ShardWriter(root / layout.shard_dir(split), shard_rng) as shards:
                for index in (i for i in range(images) if splits[i] == split):
                    pixels, record, direction, side, source_xy = _scene(seed, index, events[index])
                    downloaded = index not in failed
                    shards.add(pixels if downloaded else None, record)
                    records.append(record)
                    sample.scenes.append(SampleScene(record, split, events[index].key, direction, side, source_xy, downloaded))
                    bar.update()
            if split in COLUMN_ORIENTED_SPLITS:
                payload: object = {f: {str(i): r[f] for i, r in enumerate(records)} for f in layout.FIELDS}
            else:
                payload = records
            write_bytes(root / layout.json_path(split), json_bytes(payload))
    return sample


class _ShardWriter:
    """Streams samples into img2dataset-style shards: `NNNNN.tar` plus `NNNNN_stats.json`, keys counting failures."""

    def __init__(self, folder: Path, rng: np.random.Generator) -> None:
        self.folder, self.rng = folder, rng
        self.shard_id, self.index, self.successes = 0, 0, 0
        self.archive: tarfile.TarFile | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> "_ShardWriter":
        self._open()
        return self

    def _open(self) -> None:
        self.archive = tarfile.open(self.folder / layout.shard_name(self.shard_id), "w", format=tarfile.GNU_FORMAT)

    def add(self, pixels: np.ndarray | None, record: dict) -> None:
        if self.index == layout.SAMPLES_PER_SHARD:
            self._close()
            self.shard_id, self.index, self.successes = self.shard_id + 1, 0, 0
            self._open()
        key = layout.sample_key(self.shard_id, self.index)
        self.index += 1
        if pixels is None:  # a failed download keeps its key but writes nothing, as in img2dataset
            return
        image = png_bytes(pixels)
        scale = self.rng.uniform(1.5, 6.0)
        meta = {
            "url": record["image_src"], "caption": record["image_alt"], "id": record["id"],
            "captions": record["captions"], "key": key, "status": "success", "error_message": None,
            "width": pixels.shape[1], "height": pixels.shape[0],
            "original_width": int(pixels.shape[1] * scale), "original_height": int(pixels.shape[0] * scale),
            "exif": "{}", "sha256": hashlib.sha256(image).hexdigest(),
        }
        add_tar_member(self.archive, f"{key}.png", image)
        add_tar_member(self.archive, f"{key}.txt", record["image_alt"].encode("utf-8"))
        add_tar_member(self.archive, f"{key}.json", json.dumps(meta).encode("utf-8"))
        self.successes += 1

    def _close(self) -> None:
        self.archive.close()
        failures = self.index - self.successes
        stats = {"count": self.index, "successes": self.successes, "failed_to_download": failures, "failed_to_resize": 0,
                 "status_dict": {"success": self.successes, **({"Error 404 Not Found": failures} if failures else {})}}
        write_bytes(self.folder / f"{self.shard_id:0{layout.SHARD_DIGITS}d}_stats.json", json_bytes(stats))

    def __exit__(self, *exc: object) -> None:
        self._close()


def gaia_texts() -> list[str]:
    """Every caption and alt text the GAIA sample can produce, for building a tokenizer."""
    texts = []
    for event in EVENTS:
        for place, _, _ in event.places:
            for direction in DIRECTIONS:
                for side, land in zip(SIDES, ("tree", "crop", "grass", "bare land")):
                    words = {"direction": direction, "side": side, "place": place.split(",")[0], "land": land}
                    texts += [f"{layout.CAPTION_PREFIX} {c.format(**words)}" for c in event.captions]
                    texts.append(event.alt.format(**words))
    return sorted(set(texts))
