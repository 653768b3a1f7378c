"""The ChatEarthNet part of the sample world against the upstream format, and its captions against its pixels."""

import json
import re
import zipfile
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from earthvl.builders.chatearthnet import layout
from earthvl.builders.chatearthnet.generation import BANNED_WORDS
from earthvl.builders.chatearthnet.landcover import CLASS_NAMES, LAND_COVER_CLASSES
from earthvl.builders.chatearthnet.template import NODATA_CAPTION

NAME = re.compile(r"^(\d+)_(\d+)_patch(00|01|10|11)\.png$")
REGION_WINDOWS = {
    "top left": (slice(0, 128), slice(0, 128)),
    "top right": (slice(0, 128), slice(128, 256)),
    "bottom left": (slice(128, 256), slice(0, 128)),
    "bottom right": (slice(128, 256), slice(128, 256)),
    "middle": (slice(64, 192), slice(64, 192)),
}
NAME_TO_INDEX = {c.name: c.index for c in LAND_COVER_CLASSES[1:]}
MENTION = re.compile(r"\b(" + "|".join(sorted(map(re.escape, CLASS_NAMES), key=len, reverse=True)) + r")\b", re.I)


def load_records(root, source, split):
    return json.loads((root / layout.json_path(source, split)).read_text())


def normalise(record):
    name = record.get("image", record.get("image_id"))
    caption = record["caption"][0] if isinstance(record["caption"], list) else record["caption"]
    return name, caption


def mentions(text):
    return [NAME_TO_INDEX[m.lower()] for m in MENTION.findall(text)]


def top_classes(labels):
    """Independent of the package: classes with >= 20 pixels, most frequent first (background ignored)."""
    counts = np.bincount(labels.ravel(), minlength=12)
    counts[0] = 0
    return [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] >= 20]


def test_json_files_and_record_keys(sample_world):
    root = sample_world.chatearthnet.root
    assert sorted(p.name for p in (root / "json_files").iterdir()) == sorted(
        f"ChatEarthNet_caps_{s}_{x}.json" for s in ("35", "4v") for x in ("train", "val", "test")
    )
    keys, list_captions = set(), 0
    for source in ("gpt35", "gpt4v"):
        for split in layout.SPLITS:
            records = load_records(root, source, split)
            assert isinstance(records, list) and records
            for record in records:
                assert set(record) in ({"image", "caption"}, {"image_id", "caption"})
                keys |= set(record)
                list_captions += isinstance(record["caption"], list)
                if isinstance(record["caption"], list):
                    assert len(record["caption"]) == 1 and isinstance(record["caption"][0], str)
    assert "image_id" in keys and "image" in keys
    assert list_captions > 0


def test_images_exist_in_all_band_folders_with_upstream_format(sample_world):
    root = sample_world.chatearthnet.root
    names = {normalise(r)[0] for split in layout.SPLITS for r in load_records(root, "gpt35", split)}
    assert len(names) == 4 * 12
    for name in names:
        x, y, _ = NAME.match(name).groups()
        assert 0 <= int(x) < 8192 and 0 <= int(y) < 8192
        for folder in ("s2_rgb_images/s2_images", "s2_band_5_6_7_images", "s2_band_8_11_12_images"):
            with Image.open(root / folder / name) as image:
                assert image.format == "PNG" and image.mode == "RGB" and image.size == (256, 256)
                assert np.asarray(image).dtype == np.uint8
    on_disk = {p.name for p in (root / "s2_rgb_images" / "s2_images").iterdir()}
    assert on_disk == names


def test_tiles_are_plausible_and_splits_keep_tiles_together(sample_world):
    root = sample_world.chatearthnet.root
    split_of_tile = defaultdict(set)
    patches_of_tile = defaultdict(set)
    sizes = {}
    for split in layout.SPLITS:
        names = [normalise(r)[0] for r in load_records(root, "gpt35", split)]
        sizes[split] = len(names)
        for name in names:
            x, y, patch = NAME.match(name).groups()
            split_of_tile[x, y].add(split)
            patches_of_tile[x, y].add(patch)
            lat, lon = layout.patch_center(int(x), int(y), patch)
            assert -60 < lat < 75 and -180 < lon < 180
    assert all(len(s) == 1 for s in split_of_tile.values())
    assert all(p == set(layout.PATCHES) for p in patches_of_tile.values())
    assert sizes == {"train": 4 * 7, "validation": 4 * 1, "test": 4 * 4}  # 12 tiles at 60/10/30
    for split in layout.SPLITS:
        gpt4v = {normalise(r)[0] for r in load_records(root, "gpt4v", split)}
        gpt35 = {normalise(r)[0] for r in load_records(root, "gpt35", split)}
        assert gpt4v and gpt4v <= gpt35


def test_patch_center_matches_the_tile_formula():
    lat, lon = layout.patch_center(4096, 4096, "00")
    n = 8192
    assert lon == pytest.approx((4096 + 0.25) / n * 360 - 180)
    assert lat == pytest.approx(np.degrees(np.arctan(np.sinh(np.pi * (1 - 2 * (4096 + 0.25) / n)))))
    assert layout.tile_for(lat, lon) == (4096, 4096)


def test_nodata_patches_are_blank_in_every_band(sample_world):
    root = sample_world.chatearthnet.root
    blank = [p for p in sample_world.chatearthnet.patches if p.nodata]
    assert {p.nodata for p in blank} == {"white", "black"}
    captions = {normalise(r)[0]: normalise(r)[1] for s in layout.SPLITS for r in load_records(root, "gpt35", s)}
    for patch in blank:
        for folder in layout.IMAGE_DIRS.values():
            pixels = np.asarray(Image.open(root / folder / patch.file_name))
            assert np.all(pixels == (255 if patch.nodata == "white" else 0))
        assert captions[patch.file_name] == NODATA_CAPTION
    real = [p for p in sample_world.chatearthnet.patches if not p.nodata]
    assert all(np.asarray(Image.open(root / layout.image_path("rgb", p.file_name))).std() > 5 for p in real)


def test_gpt35_captions_are_faithful_to_the_label_maps(sample_world):
    root = sample_world.chatearthnet.root
    truth = {p.file_name: p for p in sample_world.chatearthnet.patches}
    checked = 0
    for split in layout.SPLITS:
        for record in load_records(root, "gpt35", split):
            name, caption = normalise(record)
            patch = truth[name]
            assert patch.split == split
            if patch.nodata:
                continue
            sentences = caption.split(". ")
            assert mentions(sentences[0])[0] == top_classes(patch.label_map)[0], caption
            for region, window in REGION_WINDOWS.items():
                sentence = next(s for s in sentences[1:] if f"the {region} part" in s.lower())
                assert mentions(sentence) == top_classes(patch.label_map[window])[:3], (region, sentence)
            lowered = caption.lower()
            assert not any(re.search(rf"\b{w}", lowered) for w in BANNED_WORDS), caption
            checked += 1
    assert checked >= 40


def test_gpt4v_captions_name_the_dominant_class_with_its_percentage(sample_world):
    root = sample_world.chatearthnet.root
    truth = {p.file_name: p for p in sample_world.chatearthnet.patches}
    for split in layout.SPLITS:
        for record in load_records(root, "gpt4v", split):
            name, caption = normalise(record)
            labels = truth[name].label_map
            if truth[name].nodata:
                continue
            dominant = top_classes(labels)[0]
            assert mentions(caption)[0] == dominant
            share = round(100 * np.mean(labels == dominant))
            assert f"about {share}%" in caption
            assert not re.search(r"\b(red|green|blue|yellow|purple|cyan|magenta)\b", caption.lower())


def band_stack(root, name):
    return np.concatenate([np.asarray(Image.open(root / layout.image_path(g, name))) for g in layout.BAND_GROUPS], axis=-1)


def class_means(sample_world):
    root = sample_world.chatearthnet.root
    sums, counts = np.zeros((12, 9)), np.zeros(12)
    for patch in sample_world.chatearthnet.patches:
        if patch.nodata:
            continue
        bands = band_stack(root, patch.file_name).reshape(-1, 9).astype(np.float64)
        labels = patch.label_map.ravel()
        np.add.at(sums, labels, bands)
        counts += np.bincount(labels, minlength=12)
    return {c.key: sums[c.index] / counts[c.index] for c in LAND_COVER_CLASSES if counts[c.index] > 500}


def test_spectra_are_class_typical_and_extra_bands_carry_information(sample_world):
    means = class_means(sample_world)
    b = {name: i for i, name in enumerate(layout.BANDS)}
    if "water" in means:
        assert means["water"][b["B8"]] < 30 and means["water"][b["B11"]] < 30
    for veg in ("tree", "grass", "crop"):
        if veg in means:
            assert means[veg][b["B8"]] > 2 * means[veg][b["B4"]]
    if "snow" in means:
        assert means["snow"][:3].min() > 200 and means["snow"][b["B11"]] < 80
    if "bare" in means:
        assert means["bare"][b["B11"]] > means["bare"][b["B8"]]
    # pairs that look alike in true colour but differ beyond it
    pairs = [(a, c) for a, c in (("tree", "mangroves"), ("grass", "crop"), ("shrub", "moss")) if a in means and c in means]
    assert pairs, f"the sample has none of the look-alike pairs: {sorted(means)}"
    for a, c in pairs:
        assert np.abs(means[a][:3] - means[c][:3]).max() < 12, (a, c)
        assert np.abs(means[a][3:] - means[c][3:]).max() > 30, (a, c)


def test_zenodo_zips_hold_the_tree(sample_world):
    root = sample_world.chatearthnet.root
    assert sorted(z.name for z in sample_world.zips) == sorted(layout.ZIP_NAMES.values())
    for key, zip_name in layout.ZIP_NAMES.items():
        folder = layout.JSON_DIR if key == "json" else layout.IMAGE_DIRS[key]
        with zipfile.ZipFile(sample_world.root / "chatearthnet_zenodo" / zip_name) as archive:
            members = archive.namelist()
            expected = sorted(p.relative_to(root).as_posix() for p in (root / folder).rglob("*") if p.is_file())
            assert sorted(members) == expected
            assert archive.read(members[0]) == (root / members[0]).read_bytes()
