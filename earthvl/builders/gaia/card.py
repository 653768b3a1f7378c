"""The dataset card of a GAIA build."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from huggingface_hub import DatasetCard, DatasetCardData

from earthvl.builders.folder import BuildReport, card_configs
from earthvl.builders.gaia import layout
from earthvl.cards.datasets import dataset_card as make_card
from earthvl.cards.datasets import figures_section, first_images, read_columns, rows_table, statistics_section

CITATION = """@article{zavras2026gaia,
  title   = {{GAIA}: A Global, Multi-modal, Multi-scale Vision-Language Dataset for Remote Sensing Image Analysis},
  author  = {Zavras, Angelos and Michail, Dimitrios and Zhu, Xiao Xiang and Demir, Beg{\\\"u}m and Papoutsis, Ioannis},
  journal = {IEEE Geoscience and Remote Sensing Magazine},
  year    = {2026}
}"""
PAPER_STATISTICS = (
    "On the full release the paper reports, for the synthetic captions, a vocabulary of 28,751 words, 7,862 hapax "
    "legomena, 7,493,402 words, 12-84 words per caption (mean 36.53, median 36, std 7.23) and 1.87 sentences per "
    "caption; for the alt texts a vocabulary of 16,173 and 9.61 words on average."
)


def dataset_card(folder: Path, report: BuildReport, configs: Sequence[str], splits: Sequence[str], strip_prefix: bool) -> DatasetCard:
    """The card: YAML configs pointing at the shards, license, row counts, fields, Table IV statistics, figures."""
    tables = read_columns(folder, "metadata" if "metadata" in configs else "default", ["captions", "image_alt", "lat", "lon"], splits)
    captions = [c for table in tables.values() for row in table.column("captions").to_pylist() for c in row or ()]
    alt_texts = [text for table in tables.values() for text in table.column("image_alt").to_pylist() if text]
    lats = [lat for table in tables.values() for lat in table.column("lat").to_pylist()]
    lons = [lon for table in tables.values() for lon in table.column("lon").to_pylist()]
    groups = [split for split, table in tables.items() for _ in range(table.num_rows)]
    first_split, first = next(iter(tables.items()))
    grid_captions = [row[0] if row else "" for row in first.column("captions").to_pylist()]
    images = first_images(folder, "default", first_split) if "default" in configs else []
    texts = {name: source for name, source in {"synthetic captions": captions, "alt text": alt_texts}.items() if source}
    data = DatasetCardData(
        license=layout.LICENSE,
        language="en",
        pretty_name="GAIA",
        task_categories=["image-to-text", "zero-shot-image-classification", "text-to-image"],
        tags=["remote-sensing", "earth-observation", "image-captioning", "retrieval"],
        configs=card_configs(configs, report.rows, "default"),
    )
    prefix_note = (
        f'The "{layout.CAPTION_PREFIX}" opening of every synthetic caption was removed (`--strip_prefix`).'
        if strip_prefix
        else f'Every synthetic caption keeps its "{layout.CAPTION_PREFIX}" opening (build with `--strip_prefix` to drop it).'
    )
    body = f"""# GAIA

Web-scraped Earth-observation images with five GPT-4o captions each and the metadata of the source pages,
repackaged as Parquet from the Hub repository [{layout.HUB_ID}](https://huggingface.co/datasets/{layout.HUB_ID})
with the official (spatio-temporally stratified) splits.

{rows_table(report.rows)}

`default` has one row per image with its pixels ({report.notes.get("images_from") or "not built"}); `metadata`
has the same fields without pixels. Records that could not become rows are listed with the reason in
`build_report.json` ({len(report.skipped):,} entries).

## Fields

`image` (`default` only), then the upstream fields under their upstream names: `id`, `image_src` (source URL),
`image_alt` (alt text), `captions` (five synthetic captions), `credits`, `location`, `lat`, `lon`, `tag`,
`resolution` ({", ".join(layout.RESOLUTIONS)}), `satellite`, `sensor`, `modalities`. Lists stay lists and
missing values are null. {prefix_note}

{statistics_section(texts) if texts else "No row of this build has a caption or an alt text: no caption statistics."}
{PAPER_STATISTICS}

{figures_section(folder, images=images, captions=grid_captions, lats=lats, lons=lons, groups=groups, texts=texts)}
## License and citation

Metadata and captions: MIT. Image rights stay with the sources named in `credits`; check them before
redistributing pixels. Cite GAIA (Zavras et al., IEEE GRSM 2026):

```bibtex
{CITATION}
```
"""
    return make_card(data, body)
