"""The GAIA part of the sample world against the upstream format, and its pixels against its captions."""

import hashlib
import io
import json
import math
import re
import tarfile

import numpy as np
from PIL import Image

from earthvl.builders.gaia import layout


def split_records(root, split):
    data = json.loads((root / layout.json_path(split)).read_text())
    if isinstance(data, dict):  # pandas column orientation
        assert set(data) == set(layout.FIELDS)
        index = sorted(data["id"], key=int)
        return [{field: data[field][i] for field in layout.FIELDS} for i in index], "columns"
    return data, "records"


def shard_members(root, split):
    members = {}
    for shard in sorted((root / layout.shard_dir(split)).glob("*.tar")):
        assert re.fullmatch(r"\d{5}\.tar", shard.name)
        with tarfile.open(shard) as archive:
            for member in archive.getmembers():
                members[member.name] = archive.extractfile(member).read()
    return members


def test_metadata_json_has_upstream_fields_in_both_orientations(sample_world):
    root = sample_world.gaia.root
    orientations = set()
    total = 0
    for split in layout.SPLITS:
        records, orientation = split_records(root, split)
        orientations.add(orientation)
        total += len(records)
        for record in records:
            assert tuple(record) == layout.FIELDS
            assert len(record["captions"]) == 5
            assert all(c.startswith(layout.CAPTION_PREFIX + " ") for c in record["captions"])
            assert record["resolution"] in (*layout.RESOLUTIONS, None)
            for key in layout.LIST_FIELDS:
                assert record[key] is None or (isinstance(record[key], list) and all(isinstance(v, str) for v in record[key]))
            for key in ("lat", "lon"):
                assert record[key] is None or isinstance(record[key], float)
            assert record["image_src"].startswith("https://")
    assert orientations == {"records", "columns"}
    assert total == 30


def test_shards_follow_img2dataset(sample_world):
    root = sample_world.gaia.root
    downloaded = {s.record["id"] for s in sample_world.gaia.scenes if s.downloaded}
    failed = [s for s in sample_world.gaia.scenes if not s.downloaded]
    assert failed, "the sample should contain failed downloads, as a real img2dataset run does"
    seen_ids = set()
    for split in layout.SPLITS:
        records = {r["id"]: r for r in split_records(root, split)[0]}
        members = shard_members(root, split)
        keys = {name.rsplit(".", 1)[0] for name in members}
        for key in keys:
            assert re.fullmatch(r"\d{8}", key)
            assert {f"{key}.png", f"{key}.txt", f"{key}.json"} <= set(members)
            meta = json.loads(members[f"{key}.json"])
            assert tuple(meta) == layout.SHARD_JSON_FIELDS
            record = records[meta["id"]]
            assert meta["key"] == key and meta["status"] == "success"
            assert meta["captions"] == record["captions"] and meta["url"] == record["image_src"]
            assert members[f"{key}.txt"].decode() == record["image_alt"] == meta["caption"]
            png = members[f"{key}.png"]
            assert hashlib.sha256(png).hexdigest() == meta["sha256"]
            image = Image.open(io.BytesIO(png))
            assert image.format == "PNG" and image.mode == "RGB"
            assert min(image.size) == 512 and image.size == (meta["width"], meta["height"])
            assert meta["original_width"] >= meta["width"]
            seen_ids.add(meta["id"])
        stats = json.loads((root / layout.shard_dir(split) / "00000_stats.json").read_text())
        assert stats["count"] == len(records)
        assert stats["successes"] == len(keys)
        assert stats["failed_to_download"] == len(records) - len(keys)
    assert seen_ids == downloaded


def test_sample_key_matches_img2dataset():
    assert layout.sample_key(0, 7) == "00000007"
    assert layout.sample_key(3, 511) == "00003511"
    assert layout.sample_key(2, 5, samples_per_shard=10_000) == "000020005"


DETECTORS = {
    "wildfire": lambda p: (p.min(-1) > 150) & (np.ptp(p, axis=-1) < 35),
    "dust": lambda p: (p[..., 0] > 190) & (p[..., 0] - p[..., 2] > 55),
    "flood": lambda p: np.all(np.abs(p - (118, 100, 72)) < 18, axis=-1),
    "snow": lambda p: p.min(-1) > 225,
    "urban_sprawl": lambda p: np.all(np.abs(p - (150, 146, 142)) < 10, axis=-1) | np.all(np.abs(p - (60, 60, 64)) < 6, axis=-1),
    "algal_bloom": lambda p: (p[..., 1] > p[..., 0] + 60) & (p[..., 1] > p[..., 2] + 40),
}
OPPOSITE = {"western": "eastern", "eastern": "western", "northern": "southern", "southern": "northern"}


def half(mask, side):
    h, w = mask.shape
    return {"western": mask[:, : w // 2], "eastern": mask[:, w // 2 :], "northern": mask[: h // 2], "southern": mask[h // 2 :]}[side]


def test_event_pixels_match_captions(sample_world):
    root = sample_world.gaia.root
    pixels_by_id = {}
    for split in layout.SPLITS:
        members = shard_members(root, split)
        for name, data in members.items():
            if name.endswith(".json"):
                png = members[name[:-5] + ".png"]
                pixels_by_id[json.loads(data)["id"]] = np.asarray(Image.open(io.BytesIO(png))).astype(np.int16)
    checked = set()
    for scene in sample_world.gaia.scenes:
        if not scene.downloaded:
            continue
        pixels = pixels_by_id[scene.record["id"]]
        mask = DETECTORS[scene.event](pixels)
        assert mask.mean() > 0.01, scene.event
        if scene.direction:
            assert all(scene.direction in c for c in scene.record["captions"])
            ys, xs = np.nonzero(mask)
            sx, sy = scene.source_xy
            angle = math.degrees(math.atan2(-(ys.mean() - sy), xs.mean() - sx))
            named = {"east": 0, "north-east": 45, "north": 90, "north-west": 135, "west": 180, "south-west": -135, "south": -90, "south-east": -45}[scene.direction]
            assert abs((angle - named + 180) % 360 - 180) < 50, (scene.event, scene.direction, angle)
        else:
            assert all(scene.side in c for c in scene.record["captions"])
            named, other = half(mask, scene.side).mean(), half(mask, OPPOSITE[scene.side]).mean()
            if scene.event == "algal_bloom":  # the named side is where the land is
                assert named < other, (scene.event, scene.side)
            else:
                assert named > 1.5 * other, (scene.event, scene.side, named, other)
        checked.add(scene.event)
    assert len(checked) == 6


def test_shards_roll_over_and_keys_stay_unique(tmp_path, monkeypatch):
    from earthvl.sample.gaia import write_gaia

    monkeypatch.setattr(layout, "SAMPLES_PER_SHARD", 4)
    sample = write_gaia(tmp_path, images=20, seed=2, progress=False)
    train = [s for s in sample.scenes if s.split == "train"]
    shards = sorted((tmp_path / "train").glob("*.tar"))
    assert [p.name for p in shards] == [f"{i:05d}.tar" for i in range(-(-len(train) // 4))]
    members = shard_members(tmp_path, "train")
    keys = sorted({name.split(".")[0] for name in members})
    assert len(keys) == sum(s.downloaded for s in train)
    assert all(k[:5] == f"{int(k[:5]):05d}" and int(k[5:]) < 4 for k in keys)
    counts = [json.loads(p.read_text())["count"] for p in sorted((tmp_path / "train").glob("*_stats.json"))]
    assert sum(counts) == len(train) and max(counts) == 4
