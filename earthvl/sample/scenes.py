"""The sample world's scene-classification benchmark: an imagefolder (`<class>/<file>.png`, like the UCMerced and
AID archives) of the RGB images of the test-split ChatEarthNet patches that have data, each filed under the dominant
WorldCover class of its land-cover map.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from earthvl.builders.chatearthnet import layout
from earthvl.builders.chatearthnet.generation import class_shares
from earthvl.builders.chatearthnet.landcover import LAND_COVER_CLASSES
from earthvl.sample.chatearthnet import ChatEarthNetSample, iter_patches, iter_tiles

SPLIT = "test"


def class_dir(index: int) -> str:
    """Folder name of a land-cover class: its caption wording with spaces as underscores (`developed_area`)."""
    return LAND_COVER_CLASSES[index].name.replace(" ", "_")


def write_scenes(dest: Path, sample: ChatEarthNetSample, seed: int, tiles: int) -> dict[str, int]:
    """Copy the RGB PNG of every test patch with data of `sample` (written with `seed` and `tiles`) into
    `dest/<dominant class>/`; return the number of images per class folder, by folder name."""
    with_data = {p.file_name for p in sample.patches if p.split == SPLIT and p.nodata is None}
    counts: Counter[str] = Counter()
    # The land-cover maps are regenerated (deterministic, cheap) rather than kept for every patch of a large world.
    for _, x, y, split, labels, _ in iter_tiles(seed, tiles):
        if split != SPLIT:
            continue
        for _, patch, window in iter_patches(labels):
            name = layout.patch_file_name(x, y, patch)
            shares = class_shares(labels[window], top=1)
            if name not in with_data or not shares:
                continue
            folder = class_dir(shares[0][0])
            (dest / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample.root / layout.image_path("rgb", name), dest / folder / name)
            counts[folder] += 1
    return dict(sorted(counts.items()))
