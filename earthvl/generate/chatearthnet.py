"""ChatEarthNet's method as a tool: captions for Sentinel-2 patches from aligned land-cover maps.

Inputs: the patches (ChatEarthNet's three band-group PNG folders, or a flat folder of RGB PNGs or 9-band GeoTIFFs),
each named `<x>_<y>_patch<ij>` (zoom-13 Web-Mercator tile and quarter, as upstream), and a land-cover map per patch
(`earthvl.builders.chatearthnet.maps`). Captions come from the `template` renderer or an LLM backend
(`earthvl.llm`) given the upstream prompts; the output is ChatEarthNet's layout, split by tile, which
`earthvl build chatearthnet --source OUT` builds, plus `generation_report.json`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from earthvl.atomic import check_writable, refuse_symlink, write_bytes
from earthvl.builders.chatearthnet import generation, layout
from earthvl.builders.chatearthnet.maps import TIFF_SUFFIXES, MapRefused, find_map, read_label_map, read_tiff
from earthvl.builders.chatearthnet.template import NODATA_CAPTION, gpt4v_caption, gpt35_caption
from earthvl.builders.stratified_splits import spatiotemporal_split
from earthvl.errors import EarthvlError
from earthvl.images import DEFAULT_MAX_PIXELS, PIL_ERRORS
from earthvl.llm.backends import Backend, ChatRequest, ChatResult, image_data_url, make_backend, shown_url
from earthvl.llm.cache import ResultCache, cache_key, content_hash
from earthvl.llm.options import BackendArguments
from earthvl.llm.runner import Accounting, Job, run_jobs
from earthvl.paths import leads_out, refuse_overlap
from earthvl.sample.files import png_bytes
from earthvl.sample.fraction_splits import assign_splits

STYLES = tuple(layout.CAPTION_SOURCES)
SPLIT_BY = ("tile", "spatiotemporal")
REPORT_FILE = "generation_report.json"
CACHE_FILE = "generation_cache.jsonl"
DEFAULT_TEMPERATURE = 1.0
"""The upstream scripts sent none: the API default."""


@dataclass
class Patch:
    """One input patch: its upstream file name, where its bands come from, and its land-cover map."""

    name: str
    tile: tuple[int, int]
    quarter: str
    sources: dict[str, Path]
    """Band group -> PNG; or {"geotiff": path} for a 9-band GeoTIFF."""
    labels: np.ndarray | None = None


@dataclass
class Generation:
    """What a run made: captions per style and patch, split per patch, and the report."""

    captions: dict[str, dict[str, str]] = field(default_factory=lambda: {s: {} for s in STYLES})
    splits: dict[str, str] = field(default_factory=dict)
    refused: list[dict[str, str]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    accounting: dict[str, dict[str, Any]] = field(default_factory=dict)


def _image_size(patch: Patch) -> tuple[int, int]:
    """(height, width) of a patch's image: from a PNG's header, or from a GeoTIFF read whole (so that one that cannot
    be decoded is refused before any caption is asked for)."""
    path = patch.sources.get("rgb") or patch.sources["geotiff"]
    if "geotiff" in patch.sources:
        return _bands(path).shape[:2]
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except PIL_ERRORS as error:  # a header over twice PIL's pixel limit raises DecompressionBombError
        raise MapRefused(f"{path.name}: cannot read the image: {error}") from error


def _outside(patch: Patch, images: Path) -> str | None:
    """Why a patch cannot be used where its files or tile are: a symbolic link out of --images, or a tile outside
    the zoom-13 grid (its centre has no latitude)."""
    for source in patch.sources.values():
        if leads_out(source, images):
            return f"{source.relative_to(images)} is a symbolic link out of --images {images}: not read"
    try:
        layout.patch_center(*patch.tile, patch.quarter)
    except ValueError as error:
        return str(error)
    return None


def discover(images: Path, labels: Path) -> tuple[list[Patch], list[dict[str, str]]]:
    """The usable patches under `images` with their maps read from `labels`, and the refused ones with reasons."""
    if not images.is_dir():
        raise EarthvlError(f"--images {images} is not a folder")
    if not labels.is_dir():
        raise EarthvlError(f"--labels {labels} is not a folder")
    tree = (images / layout.IMAGE_DIRS["rgb"]).is_dir()
    if tree:
        files = sorted((images / layout.IMAGE_DIRS["rgb"]).glob("*.png"))
    else:
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".png", *TIFF_SUFFIXES))
    if not files:
        raise EarthvlError(f"--images {images} holds no patch (PNG or GeoTIFF, or ChatEarthNet's band folders)")
    patches, refused = [], []
    for path in files:
        name = path.stem + ".png"
        parsed = layout.parse_patch_file_name(name)
        if parsed is None:
            refused.append({"patch": path.name, "reason": "file name does not match <x>_<y>_patch<ij>"})
            continue
        if tree:
            sources = {g: images / layout.image_path(g, name) for g in layout.BAND_GROUPS}
            sources = {g: p for g, p in sources.items() if p.is_file()}
        else:
            sources = {"geotiff" if path.suffix.lower() in TIFF_SUFFIXES else "rgb": path}
        patch = Patch(name, parsed[:2], parsed[2], sources)
        problem = _outside(patch, images)
        if problem is not None:
            refused.append({"patch": name, "reason": problem})
            continue
        try:
            map_path = find_map(labels, path.stem)
            if map_path is None:
                raise MapRefused(f"no land-cover map {path.stem}.png/.tif in {labels}")
            patch.labels = read_label_map(map_path, _image_size(patch))
        except MapRefused as error:
            refused.append({"patch": name, "reason": str(error)})
            continue
        patches.append(patch)
    return patches, refused


def assign_tile_splits(
    tiles: list[tuple[int, int]], split_by: str, seed: int, dates: Mapping[str, str] | None = None
) -> dict[tuple[int, int], str]:
    """A split per tile (so a tile's four patches share it): shuffled 60/10/30 as upstream, or `spatiotemporal`
    (geohash cell x season of `dates`, keyed `<x>_<y>`)."""
    if split_by == "tile":
        if len(tiles) < len(layout.SPLIT_FRACTIONS):
            return dict.fromkeys(tiles, "train")
        names = assign_splits(np.random.default_rng(seed), len(tiles), layout.SPLIT_FRACTIONS)
    else:
        centres = [layout.patch_center(x, y, "00") for x, y in tiles]
        names = spatiotemporal_split(
            [lat for lat, _ in centres],
            [lon for _, lon in centres],
            [(dates or {}).get(f"{x}_{y}") for x, y in tiles],
            layout.SPLIT_FRACTIONS,
            seed=seed,
        )
    return dict(zip(tiles, names))


def _rng(seed: int, patch: Patch) -> np.random.Generator:
    return np.random.default_rng([seed, *patch.tile, int(patch.quarter, 2)])


def _is_blank(patch: Patch) -> bool:
    return not generation.caption_statistics(patch.labels).overall


def template_captions(
    patches: list[Patch], tiles: dict[tuple[int, int], list[Patch]], styles: list[str], seed: int
) -> dict[str, dict[str, str]]:
    """The template renderer's captions (the sample world's generator) per style and patch; gpt4v ones only for
    the patches of whole `tiles`, as upstream."""
    out: dict[str, dict[str, str]] = {s: {} for s in STYLES}
    whole = {p.name for quarters in tiles.values() for p in quarters}
    for patch in patches:
        stats = generation.caption_statistics(patch.labels)
        rng = _rng(seed, patch)
        if "gpt35" in styles:
            out["gpt35"][patch.name] = gpt35_caption(stats, rng)
        if "gpt4v" in styles and patch.name in whole:
            out["gpt4v"][patch.name] = gpt4v_caption(stats, patch.labels, rng)
    return out


def _request(messages: list[dict[str, Any]], style: str, options: BackendArguments) -> ChatRequest:
    data = generation.prompt_data(style)
    return ChatRequest(
        messages=messages,
        max_tokens=options.max_tokens or data["max_tokens"],
        temperature=DEFAULT_TEMPERATURE if options.temperature is None else options.temperature,
        seed=options.seed,
    )


def _key(style: str, patches: list[Patch], request: ChatRequest, backend: Backend) -> str:
    return cache_key(
        {
            "prompt": generation.prompt_version(style),
            "images": [content_hash(b"".join(p.read_bytes() for p in sorted(x.sources.values()))) for x in patches],
            "maps": [content_hash(x.labels.tobytes() + str(x.labels.shape).encode()) for x in patches],
            "messages": content_hash(json.dumps(request.messages, sort_keys=True).encode()),
            "backend": backend.settings(),
            "sampling": request.sampling(),
        }
    )


def gpt35_jobs(patches: list[Patch], backend: Backend, options: BackendArguments, seed: int) -> Iterator[Job]:
    """One request per patch with a non-blank map (the upstream gpt-3.5 layout)."""
    for patch in patches:
        if not _is_blank(patch):
            messages = generation.gpt35_messages(generation.caption_statistics(patch.labels), _rng(seed, patch))
            request = _request(messages, "gpt35", options)
            yield Job(patch.name, _key("gpt35", [patch], request, backend), request)


def full_tiles(patches: list[Patch]) -> tuple[dict[tuple[int, int], list[Patch]], list[Patch]]:
    """Tiles with all four patches (in `layout.PATCHES` order), and the patches of incomplete tiles."""
    by_tile: dict[tuple[int, int], dict[str, Patch]] = {}
    for patch in patches:
        by_tile.setdefault(patch.tile, {})[patch.quarter] = patch
    full = {t: [q[p] for p in layout.PATCHES] for t, q in by_tile.items() if len(q) == len(layout.PATCHES)}
    partial = [p for t, q in by_tile.items() if t not in full for p in q.values()]
    return full, partial


def gpt4v_jobs(tiles: dict[tuple[int, int], list[Patch]], backend: Backend, options: BackendArguments) -> Iterator[Job]:
    """One request per tile: the upstream text prompt and the four downsampled colour maps as PNG data URLs."""
    for (x, y), quarters in tiles.items():
        maps = [p.labels for p in quarters]
        content: list[dict[str, Any]] = [{"type": "text", "text": generation.gpt4v_prompt(maps)}]
        content += [
            {"type": "image_url", "image_url": {"url": image_data_url(png_bytes(generation.gpt4v_image(m)))}}
            for m in maps
        ]
        request = _request([{"role": "user", "content": content}], "gpt4v", options)
        yield Job(f"{x}_{y}", _key("gpt4v", quarters, request, backend), request)


def _caption_text(result: ChatResult) -> str:
    text = result.text.strip()
    if not text:
        raise ValueError("empty answer")
    return text


def _four_paragraphs(result: ChatResult) -> list[str]:
    return generation.split_paragraphs(result.text)


def llm_captions(
    patches: list[Patch],
    tiles: dict[tuple[int, int], list[Patch]],
    styles: list[str],
    backend: Backend,
    options: BackendArguments,
    cache_path: Path,
    seed: int,
    progress: bool,
) -> Generation:
    """Captions from an LLM backend through the resumable cache; failures and stops recorded per patch or tile."""
    made = Generation()
    with ResultCache(cache_path) as cache:
        if "gpt35" in styles:
            jobs = list(gpt35_jobs(patches, backend, options, seed))
            values, accounting = run_jobs(backend, jobs, cache, options, parse=_caption_text, progress=progress,
                                          desc="gpt35 captions")
            made.accounting["gpt35"] = accounting.as_dict()
            for patch in patches:
                if _is_blank(patch):
                    made.captions["gpt35"][patch.name] = NODATA_CAPTION
            for job in jobs:
                if job.key in values:
                    made.captions["gpt35"][job.record] = values[job.key]
            _note_missing(made, "gpt35", jobs, values, accounting)
        if "gpt4v" in styles:
            jobs = list(gpt4v_jobs(tiles, backend, options))
            values, accounting = run_jobs(backend, jobs, cache, options, parse=_four_paragraphs, progress=progress,
                                          desc="gpt4v captions")
            made.accounting["gpt4v"] = accounting.as_dict()
            for job, quarters in zip(jobs, tiles.values()):
                for patch, paragraph in zip(quarters, values.get(job.key, [])):
                    made.captions["gpt4v"][patch.name] = paragraph
            _note_missing(made, "gpt4v", jobs, values, accounting)
    return made


def _note_missing(made: Generation, style: str, jobs: list[Job], values: dict, accounting: Accounting) -> None:
    reasons = {f["record"]: f["reason"] for f in accounting.failures}
    for job in jobs:
        if job.key not in values:
            reason = reasons.get(job.record, f"not run: stopped by {accounting.stopped_by}")
            made.failures.append({"record": job.record, "style": style, "reason": reason})


def _bands(path: Path) -> np.ndarray:
    """A 9-band GeoTIFF patch as (height, width, 9) values as stored; MapRefused when it is not one."""
    n = len(layout.BANDS)
    bands = read_tiff(path, n * DEFAULT_MAX_PIXELS)
    if bands.ndim != 3 or n not in (bands.shape[0], bands.shape[-1]):
        bands_named = ", ".join(layout.BANDS)
        raise MapRefused(f"{path.name}: a GeoTIFF patch needs {n} bands ({bands_named}), shape {bands.shape}")
    if bands.shape[0] == n and bands.shape[-1] != n:
        bands = np.moveaxis(bands, 0, -1)
    return bands


def _nine_bands(path: Path, reflectance_max: float) -> np.ndarray:
    bands = _bands(path)
    if bands.dtype == np.uint8:
        return bands
    return np.clip(bands.astype(np.float64) / reflectance_max * 255.0 + 0.5, 0, 255).astype(np.uint8)


def write_images(patch: Patch, out: Path, *, link: bool, reflectance_max: float) -> None:
    """The patch's band-group PNGs in ChatEarthNet's folders (hard links or copies; written from a GeoTIFF)."""
    if "geotiff" in patch.sources:
        bands = _nine_bands(patch.sources["geotiff"], reflectance_max)
        for g, group in enumerate(layout.BAND_GROUPS):
            write_bytes(out / layout.image_path(group, patch.name), png_bytes(bands[..., 3 * g : 3 * g + 3]))
        return
    for group, source in patch.sources.items():
        target = out / layout.image_path(group, patch.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()
        if link:
            try:
                os.link(source, target)
                continue
            except OSError:
                pass  # another file system: copy
        shutil.copyfile(source, target)


def write_layout(out: Path, made: Generation) -> dict[str, dict[str, int]]:
    """The caption JSONs per style and split (records sorted by file name); rows per style and split."""
    rows: dict[str, dict[str, int]] = {}
    for style, captions in made.captions.items():
        if not captions:
            continue
        for split in layout.SPLITS:
            records = [{"image": n, "caption": c} for n, c in sorted(captions.items()) if made.splits[n] == split]
            write_bytes(out / layout.json_path(style, split), json.dumps(records, indent=1, ensure_ascii=False).encode())
            rows.setdefault(style, {})[split] = len(records)
    return rows


@dataclass
class GenerateOptions:
    styles: list[str]
    split_by: str = "tile"
    seed: int = 0
    dates: Mapping[str, str] | None = None
    link_images: bool = False
    reflectance_max: float = 3000.0
    cache: Path | None = None
    progress: bool = True


def generate_chatearthnet(
    images: str | Path, labels: str | Path, out: str | Path, options: GenerateOptions, backend: BackendArguments
) -> dict[str, Any]:
    """Caption the patches under `images` from their maps under `labels` into ChatEarthNet's layout under `out`;
    returns the report (also written to `out/generation_report.json`)."""
    unknown = sorted(set(options.styles) - set(STYLES))
    if unknown or not options.styles:
        raise EarthvlError(f"styles must be among {', '.join(STYLES)}, got {options.styles}")
    out = check_writable(out, "output folder", folder=True)
    refuse_symlink(out, "writing into")
    refuse_overlap(out, "output folder", {"--images": images, "--labels": labels})
    llm = None if backend.backend == "template" else make_backend(backend)
    patches, refused = discover(Path(images), Path(labels))
    n_refused = len(refused)
    if not patches:
        reasons = "; ".join(dict.fromkeys(r["reason"] for r in refused[:3]))
        raise EarthvlError(f"no usable patch under {images}: every one was refused, e.g. {reasons}")
    out.mkdir(parents=True, exist_ok=True)
    tiles, partial = full_tiles(patches)
    if "gpt4v" in options.styles:
        refused += [{"patch": p.name, "style": "gpt4v", "reason": "gpt4v needs all four patches of its tile"}
                    for p in partial]
    if backend.backend == "template":
        made = Generation(captions=template_captions(patches, tiles, options.styles, options.seed))
    else:
        made = llm_captions(patches, tiles, options.styles, llm, backend, options.cache or out / CACHE_FILE,
                            options.seed, options.progress)
    made.refused = refused
    tiles = sorted({p.tile for p in patches})
    split_of = assign_tile_splits(tiles, options.split_by, options.seed, options.dates)
    made.splits = {p.name: split_of[p.tile] for p in patches}
    captioned = {n for captions in made.captions.values() for n in captions}
    for patch in patches:
        if patch.name in captioned:
            write_images(patch, out, link=options.link_images, reflectance_max=options.reflectance_max)
    rows = write_layout(out, made)
    report = {
        "images": str(images),
        "labels": str(labels),
        "backend": backend.backend if backend.backend == "template" else report_settings(backend),
        "prompts": {s: generation.prompt_version(s) for s in options.styles},
        "styles": options.styles,
        "split_by": options.split_by,
        "seed": options.seed,
        "patches": {"found": len(patches) + n_refused, "usable": len(patches), "refused": n_refused},
        "rows": rows,
        "refused": made.refused,
        "failures": made.failures,
        "accounting": made.accounting,
        "tokens": sum(a["prompt_tokens"] + a["completion_tokens"] for a in made.accounting.values()),
        "cost": round(sum(a["cost"] for a in made.accounting.values()), 6),
    }
    write_bytes(out / REPORT_FILE, json.dumps(report, indent=2, ensure_ascii=False).encode())
    return report


def report_settings(options: BackendArguments) -> dict[str, Any]:
    """The backend options worth keeping in a report (no key: it only lives in the environment; no credentials of
    the URL)."""
    return {"backend": options.backend, "base_url": shown_url(options.base_url), "model": options.model,
            "temperature": DEFAULT_TEMPERATURE if options.temperature is None else options.temperature,
            "max_tokens": options.max_tokens, "seed": options.seed}
