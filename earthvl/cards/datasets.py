"""Dataset cards for built folders: the YAML front matter, row counts, Table IV caption statistics and figures.

The statistics and figures are computed on what was built (read back from the Parquet shards), so the card
describes the folder it sits in, not the paper.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData
from PIL import Image as PILImage

from earthvl.cards.plots import caption_length_histogram, location_map, sample_grid
from earthvl.cards.statistics import caption_statistics, statistics_table, words
from earthvl.dataset_folder import DATA_DIR, FIGURES_DIR

GRID_IMAGES = 8


def read_columns(folder: Path, config: str, columns: Sequence[str], splits: Iterable[str]) -> dict[str, pa.Table]:
    """`columns` of each split of a built config that has shards (a split without rows has none), read from them."""
    shards = {split: sorted((folder / DATA_DIR / config).glob(f"{split}-*.parquet")) for split in splits}
    return {split: pq.read_table(files, columns=list(columns)) for split, files in shards.items() if files}


def first_images(folder: Path, config: str, split: str, column: str = "image", count: int = GRID_IMAGES) -> list[PILImage.Image]:
    """The first `count` images of a split, for the sample grid (only the first shard's first row group is read)."""
    shards = sorted((folder / DATA_DIR / config).glob(f"{split}-*.parquet"))
    if not shards:
        return []
    shard = pq.ParquetFile(shards[0])
    cells = shard.read_row_group(0, columns=[column]).column(column).to_pylist()[:count] if shard.num_row_groups else []
    return [PILImage.open(io.BytesIO(cell["bytes"])) for cell in cells]


def rows_table(rows: Mapping[str, Mapping[str, int]]) -> str:
    """A Markdown table of rows per config (lines) and split (columns), and which splits have no rows (and so no
    files)."""
    splits = list(dict.fromkeys(split for counts in rows.values() for split in counts))
    header = "| config | " + " | ".join(splits) + " |\n|---|" + "---:|" * len(splits)
    lines = [f"| `{config}` | " + " | ".join(f"{counts.get(split, 0):,}" for split in splits) + " |" for config, counts in rows.items()]
    empty = [f"`{config}` {split}" for config, counts in rows.items() for split, count in counts.items() if not count]
    if empty:
        lines.append(f"\nSplits without rows are not written: {', '.join(empty)}.")
    return "\n".join([header, *lines])


def statistics_section(texts: Mapping[str, Iterable[str]]) -> str:
    """Table IV of the GAIA paper (vocabulary, hapax legomena, words and sentences per caption) per text source."""
    table = statistics_table({name: caption_statistics(source) for name, source in texts.items()})
    return (
        "## Caption statistics\n\nComputed on this build, as in Table IV of the GAIA paper (words: lowercase "
        "letters and digits, `earthvl.cards.statistics.words`; std over captions, ddof 0).\n\n" + table + "\n"
    )


def figures_section(
    folder: Path,
    *,
    images: Sequence[PILImage.Image],
    captions: Sequence[str],
    lats: Sequence[float | None],
    lons: Sequence[float | None],
    groups: Sequence[str],
    texts: Mapping[str, Sequence[str]],
) -> str:
    """Write the sample grid, location map and caption-length histogram under `figures/`; their Markdown."""
    figures = folder / FIGURES_DIR
    parts = ["## Figures\n"]
    if images:
        sample_grid(images, captions[: len(images)], figures / "samples.png")
        parts.append(f"![First training samples and captions]({FIGURES_DIR}/samples.png)\n")
    if any(lat is not None for lat in lats):
        location_map(lats, lons, figures / "locations.png", title="Image locations by split", groups=groups)
        parts.append(f"![Image locations by split]({FIGURES_DIR}/locations.png)\n")
    lengths = {name: [len(words(text)) for text in source] for name, source in texts.items() if source}
    if lengths:
        caption_length_histogram(lengths, figures / "caption_lengths.png", title="Words per caption")
        parts.append(f"![Words per caption]({FIGURES_DIR}/caption_lengths.png)\n")
    return "\n".join(parts)


def dataset_card(data: DatasetCardData, body: str) -> DatasetCard:
    """A card from its YAML metadata and Markdown body."""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
