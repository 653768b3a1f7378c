"""The dataset card of a ChatEarthNet build."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from huggingface_hub import DatasetCard, DatasetCardData

from earthvl.builders.chatearthnet import layout
from earthvl.builders.chatearthnet.features import CONFIGS, DEFAULT_CONFIG
from earthvl.builders.folder import BuildReport, card_configs
from earthvl.cards.datasets import dataset_card as make_card
from earthvl.cards.datasets import figures_section, first_images, read_columns, rows_table, statistics_section

CITATION = """@article{yuan2025chatearthnet,
  title   = {{ChatEarthNet}: a global-scale image-text dataset empowering vision-language geo-foundation models},
  author  = {Yuan, Zhenghang and Xiong, Zhitong and Mou, Lichao and Zhu, Xiao Xiang},
  journal = {Earth System Science Data},
  year    = {2025}
}"""


def _card_body(report: BuildReport, statistics: str, figures: str) -> str:
    return f"""# ChatEarthNet

Sentinel-2 patches (256x256 px, 8-bit) paired with captions that gpt-3.5-turbo (`gpt35`) or gpt-4-vision (`gpt4v`)
wrote from ESA WorldCover land-cover statistics, repackaged as Parquet from Zenodo record
[{layout.ZENODO_RECORD}](https://zenodo.org/records/{layout.ZENODO_RECORD}) with the official splits.

{rows_table(report.rows)}

Records that could not become rows are listed with the reason in `build_report.json` ({len(report.skipped):,}
entries).

## Columns and band order

- `image`: true colour, bands {", ".join(layout.BAND_GROUPS["rgb"])} as R, G, B (the original PNG bytes).
- `red_edge` ({", ".join(layout.BAND_GROUPS["red_edge"])}) and `nir_swir` ({", ".join(layout.BAND_GROUPS["nir_swir"])}):
  `*-multispectral` configs only. Stacked, the nine bands are {", ".join(layout.BANDS)}
  (`earthvl.builders.chatearthnet.features.stack_bands`).
- `caption`, `file_name` (upstream `<x>_<y>_patch<ij>.png`), `tile_x`, `tile_y` (Web-Mercator zoom-13 tile),
  `patch` (quarter `<row><col>`), `lat`, `lon` (approximate patch centre, derived from the name),
  `is_nodata` (the image is an all-white or all-black placeholder).

Captions describe image regions ("top left", "middle"): flips and rotations break image-text consistency.

{statistics}
{figures}
## License and citation

Data: CC-BY-4.0 (upstream code: Apache-2.0). Cite ChatEarthNet (Yuan et al., ESSD 2025):

```bibtex
{CITATION}
```
"""


def dataset_card(folder: Path, report: BuildReport, configs: Sequence[str], splits: Sequence[str]) -> DatasetCard:
    """The card: YAML configs pointing at the shards, license, row counts, columns, caption statistics, figures."""
    by_source: dict[str, str] = {}
    for config in sorted(configs, key=lambda c: CONFIGS[c].multispectral):  # the RGB-only config where both were built
        by_source.setdefault(CONFIGS[config].captions, config)
    tables = {source: read_columns(folder, config, ["caption", "lat", "lon"], splits) for source, config in by_source.items()}
    texts = {source: [t for table in split_tables.values() for t in table.column("caption").to_pylist()] for source, split_tables in tables.items()}
    first = configs[0]
    located = tables[CONFIGS[first].captions]
    first_split = next(iter(located))
    grid = first_images(folder, first, first_split)
    data = DatasetCardData(
        license=layout.LICENSE,
        language="en",
        pretty_name="ChatEarthNet",
        task_categories=["image-to-text", "zero-shot-image-classification"],
        tags=["remote-sensing", "earth-observation", "sentinel-2", "multispectral"],
        configs=card_configs(configs, report.rows, DEFAULT_CONFIG),
    )
    figures = figures_section(
        folder,
        images=grid,
        captions=located[first_split].column("caption").to_pylist(),
        lats=[lat for table in located.values() for lat in table.column("lat").to_pylist()],
        lons=[lon for table in located.values() for lon in table.column("lon").to_pylist()],
        groups=[split for split, table in located.items() for _ in range(table.num_rows)],
        texts=texts,
    )
    return make_card(data, _card_body(report, statistics_section(texts), figures))
