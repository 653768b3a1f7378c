"""PNG figures for dataset cards: sample grids, location maps and caption-length histograms.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot's global state, so they
are thread-safe and never open a window. Each figure's title and a one-line summary are also written into the PNG
as `Title` and `Description` text chunks, readable with `PIL.Image.open(path).text`.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo

from earthvl.atomic import staged_file
from earthvl.errors import EarthvlError
from earthvl.images import to_rgb

DPI = 100
CAPTION_FONT_PT = 8
CAPTION_LINE_PX = round(CAPTION_FONT_PT * DPI / 72 * 1.35)
CAPTION_CHAR_PX = CAPTION_FONT_PT * DPI / 72 * 0.6
"""Approximate advance of one character of the default sans font, used to wrap captions to the tile width."""
LETTERBOX = (255, 255, 255)
GRATICULE_DEGREES = 30


def _save(figure: Figure, path: str | Path, *, title: str, description: str) -> Path:
    """Render `figure` to `path` as an RGB PNG, atomically: to a temporary file in the same folder, then renamed."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    # RGB rather than matplotlib's RGBA: the figures are opaque and the file is a quarter smaller
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
    info = PngInfo()
    info.add_text("Title", title)
    info.add_text("Description", description)
    with staged_file(path) as temporary:
        image.save(temporary, format="PNG", pnginfo=info, dpi=(DPI, DPI))
    return Path(path)


def _caption_lines(caption: str, caption_chars: int, line_chars: int) -> list[str]:
    caption = " ".join(caption.split())
    if len(caption) > caption_chars:
        caption = caption[: caption_chars - 1].rstrip() + "…"
    return textwrap.wrap(caption, line_chars, break_long_words=True)


def sample_grid(
    images: Sequence[Image.Image],
    captions: Sequence[str] | None,
    path: str | Path,
    *,
    columns: int = 4,
    tile: int = 160,
    caption_chars: int = 80,
) -> Path:
    """A grid of `tile`-px thumbnails (aspect kept, letterboxed), each with its caption shortened and wrapped under it.

    The PNG is `min(columns, len(images)) * tile` px wide; each row is `tile` px plus the height of the longest
    wrapped caption, so without captions it is `rows * tile` px high.
    """
    if not images:
        raise EarthvlError("sample_grid got no images")
    if captions is not None and len(captions) != len(images):
        raise EarthvlError(f"sample_grid got {len(captions)} captions for {len(images)} images")
    if columns < 1:
        raise EarthvlError(f"columns must be at least 1, got {columns}")
    if tile < 16:
        raise EarthvlError(f"tile must be at least 16 px, got {tile}")
    if caption_chars < 2:
        raise EarthvlError(f"caption_chars must be at least 2, got {caption_chars}")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    line_chars = max(1, int(tile / CAPTION_CHAR_PX))
    lines = [_caption_lines(caption or "", caption_chars, line_chars) for caption in captions or ()]
    caption_px = max((len(wrapped) for wrapped in lines), default=0) * CAPTION_LINE_PX
    if caption_px:
        caption_px += CAPTION_LINE_PX // 2  # a little air between the image and its caption
    cell_px = tile + caption_px

    canvas = np.full((rows * cell_px, columns * tile, 3), 255, dtype=np.uint8)
    for index, image in enumerate(images):
        top, left = (index // columns) * cell_px, (index % columns) * tile
        thumbnail = ImageOps.pad(to_rgb(image, LETTERBOX), (tile, tile), color=LETTERBOX)
        canvas[top : top + tile, left : left + tile] = np.asarray(thumbnail)

    figure = Figure(figsize=(columns * tile / DPI, rows * cell_px / DPI), dpi=DPI)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(canvas, interpolation="nearest")
    axes.set_axis_off()
    for index, wrapped in enumerate(lines):
        top, left = (index // columns) * cell_px, (index % columns) * tile
        axes.text(
            left + tile / 2, top + tile + CAPTION_LINE_PX // 4, "\n".join(wrapped),
            ha="center", va="top", fontsize=CAPTION_FONT_PT, linespacing=1.1,
        )
    return _save(figure, path, title="Sample images", description=f"{len(images)} images in {rows} x {columns}")


def _coordinate(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def location_map(
    lats: Sequence[float | None],
    lons: Sequence[float | None],
    path: str | Path,
    *,
    title: str | None = None,
    groups: Sequence[str] | None = None,
) -> Path:
    """Points on a plate carrée world map with a 30° graticule, coloured by group (e.g. split) if given.

    There is no offline coastline data, so only the graticule and the points are drawn. Rows whose latitude or
    longitude is None or NaN are skipped; how many is written under the title.
    """
    if not lats:
        raise EarthvlError("location_map got no coordinates")
    if len(lons) != len(lats):
        raise EarthvlError(f"location_map got {len(lats)} latitudes but {len(lons)} longitudes")
    if groups is not None and len(groups) != len(lats):
        raise EarthvlError(f"location_map got {len(groups)} groups for {len(lats)} coordinates")
    points: dict[str, list[tuple[float, float]]] = {}
    skipped = 0
    for index, (lat, lon) in enumerate(zip(lats, lons)):
        lat, lon = _coordinate(lat), _coordinate(lon)
        if lat is None or lon is None:
            skipped += 1
            continue
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise EarthvlError(f"coordinate {index} is out of range: lat={lat}, lon={lon}")
        points.setdefault(str(groups[index]) if groups is not None else "", []).append((lon, lat))
    located = len(lats) - skipped
    title = title or "Image locations"
    summary = f"{located:,} located, {skipped:,} without coordinates"

    figure = Figure(figsize=(10, 5.6), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    for group, xy in points.items():
        lon_lat = np.asarray(xy)
        label = f"{group} ({len(xy):,})" if groups is not None else None
        axes.scatter(lon_lat[:, 0], lon_lat[:, 1], s=6, alpha=0.7, linewidths=0, label=label)
    axes.set_xlim(-180, 180)
    axes.set_ylim(-90, 90)
    axes.set_aspect("equal")
    axes.set_xticks(range(-180, 181, GRATICULE_DEGREES))
    axes.set_yticks(range(-90, 91, GRATICULE_DEGREES))
    axes.grid(True, color="0.8", linewidth=0.6)
    axes.set_xlabel("longitude (°)")
    axes.set_ylabel("latitude (°)")
    figure.suptitle(title)
    axes.set_title(summary, fontsize=9)
    if groups is not None and points:
        axes.legend(loc="lower left", fontsize=8, markerscale=2)
    return _save(figure, path, title=title, description=summary)


def caption_length_histogram(
    lengths: Mapping[str, Sequence[int]], path: str | Path, *, title: str | None = None
) -> Path:
    """Histogram of words per caption, one series per text source, each with its mean marked by a dashed line.

    Bars show each source's share of its captions, so sources of different sizes compare directly.
    """
    if not lengths:
        raise EarthvlError("caption_length_histogram got no text sources")
    series = {}
    for source, values in lengths.items():
        array = np.asarray(values, dtype=np.int64)
        if array.size == 0:
            raise EarthvlError(f"caption_length_histogram: text source {source!r} has no lengths")
        if array.min() < 0:
            raise EarthvlError(f"caption_length_histogram: text source {source!r} has a negative length")
        series[source] = array
    high = max(int(array.max()) for array in series.values())
    step = max(1, math.ceil((high + 1) / 60))
    bins = np.arange(0, high + step + 1, step)
    title = title or "Words per caption"
    summary = ", ".join(f"{source}: mean {array.mean():.2f}" for source, array in series.items())

    figure = Figure(figsize=(8, 4.5), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    for index, (source, array) in enumerate(series.items()):
        color = f"C{index % 10}"  # the default colour cycle, so the mean line matches its bars
        mean = float(array.mean())
        axes.hist(
            array, bins=bins, weights=np.full(array.size, 1 / array.size), histtype="stepfilled",
            alpha=0.45, color=color, edgecolor=color, label=f"{source} (n={array.size:,}, mean {mean:.2f})",
        )
        axes.axvline(mean, color=color, linestyle="--", linewidth=1.2)
    axes.set_xlabel("words per caption")
    axes.set_ylabel("share of captions")
    axes.set_title(title)
    axes.legend(fontsize=8)
    return _save(figure, path, title=title, description=summary)

