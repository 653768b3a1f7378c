"""The ChatEarthNet builder against a sample world: zips and tree agree, the folder loads offline with every row,
feature and original byte, bad records are skipped and reported, and builds are atomic."""

import hashlib
import io
import json
import math
import shutil
import socket
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Image, load_dataset
from huggingface_hub import DatasetCard
from PIL import Image as PILImage

from earthvl.builders.chatearthnet import build, layout
from earthvl.builders.chatearthnet.build import CONFIGS, build_chatearthnet, features_for
from earthvl.builders.chatearthnet.features import stack_bands
from earthvl.cards.statistics import caption_statistics
from earthvl.errors import EarthvlError
from earthvl.sample import generate_sample

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_sample(tmp_path_factory.mktemp("world"), tiles=6, seed=1, zip_archives=True, progress=False)


@pytest.fixture(scope="module")
def tree(world):
    return world.chatearthnet.root


@pytest.fixture(scope="module")
def built(world, tmp_path_factory):
    """The same dataset built from the zips and from the extracted tree."""
    out = tmp_path_factory.mktemp("built")
    zips = world.root / "chatearthnet_zenodo"
    reports = {
        "zip": build_chatearthnet(zips, out / "from_zip", progress=False, num_proc=2),
        "tree": build_chatearthnet(world.chatearthnet.root, out / "from_tree", progress=False, num_proc=1),
    }
    return out / "from_zip", out / "from_tree", reports


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


def records(root: Path, source: str, split: str) -> list[tuple[str, str]]:
    """(file name, caption) of each upstream record, both spellings normalised, independently of the builder."""
    rows = json.loads((root / layout.json_path(source, split)).read_text())
    return [
        (r.get("image", r.get("image_id")), r["caption"][0] if isinstance(r["caption"], list) else r["caption"])
        for r in rows
    ]


def shards(folder: Path, config: str) -> list[str]:
    return sorted(p.name for p in (folder / "data" / config).iterdir())


def test_zips_and_tree_give_identical_rows(built):
    from_zip, from_tree, reports = built
    assert reports["zip"]["source_kind"] == "zip" and reports["tree"]["source_kind"] == "tree"
    assert reports["zip"]["rows"] == reports["tree"]["rows"]
    assert reports["zip"]["skipped"] == reports["tree"]["skipped"] == []
    for config in CONFIGS:
        assert shards(from_zip, config) == shards(from_tree, config) == [
            f"{split}-00000-of-00001.parquet" for split in sorted(SPLITS)
        ]
        for name in shards(from_zip, config):
            a = pq.read_table(from_zip / "data" / config / name)
            b = pq.read_table(from_tree / "data" / config / name)
            assert a.equals(b) and a.num_rows > 0


def test_output_does_not_depend_on_worker_processes(world, built, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "CHUNK_RECORDS", 5)
    zips = world.root / "chatearthnet_zenodo"
    in_workers = build_chatearthnet(zips, tmp_path / "workers", configs=["gpt35", "gpt35-multispectral"], progress=False, num_proc=2)
    here = build_chatearthnet(zips, tmp_path / "here", configs=["gpt35", "gpt35-multispectral"], progress=False, num_proc=1)
    assert in_workers["rows"] == here["rows"] == {c: built[2]["zip"]["rows"][c] for c in ("gpt35", "gpt35-multispectral")}
    for config in ("gpt35", "gpt35-multispectral"):
        names = shards(tmp_path / "workers", config)
        assert names == shards(tmp_path / "here", config)
        assert len([n for n in names if n.startswith("train-")]) == math.ceil(here["rows"][config]["train"] / 5)
        for split in SPLITS:
            tables = {
                where: pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / where / "data" / config).glob(f"{split}-*")))
                for where in ("workers", "here")
            }
            original = pq.read_table(built[0] / "data" / config / f"{split}-00000-of-00001.parquet")
            assert tables["workers"].equals(tables["here"]) and tables["here"].equals(original)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_config_loads_with_all_rows_and_original_bytes(built, tree, cache, config):
    source, multispectral = CONFIGS[config]
    dataset = load_dataset(str(built[0]), config, cache_dir=cache)
    assert sorted(dataset) == sorted(SPLITS)
    image_columns = ["image", "red_edge", "nir_swir"] if multispectral else ["image"]
    for split in SPLITS:
        expected = records(tree, source, split)
        rows = dataset[split]
        assert rows.features == features_for(multispectral)
        assert rows.num_rows == len(expected) == built[2]["zip"]["rows"][config][split]
        assert list(zip(rows["file_name"], rows["caption"])) == expected
        for column in image_columns:
            rows = rows.cast_column(column, Image(decode=False))
        group_of = {"image": "rgb", "red_edge": "red_edge", "nir_swir": "nir_swir"}
        for row in rows:
            for column in image_columns:
                original = tree / layout.image_path(group_of[column], row["file_name"])
                assert row[column]["bytes"] == original.read_bytes()
                assert row[column]["path"] == row["file_name"]


def test_tile_patch_and_coordinates_of_a_known_file(built, world, cache):
    patch = next(p for p in world.chatearthnet.patches if p.split == "test" and p.patch == "10")
    rows = load_dataset(str(built[0]), "gpt35", split="test", cache_dir=cache)
    row = rows[rows["file_name"].index(patch.file_name)]
    # upstream-data.md: tile centre from the zoom-13 index, then a quarter-tile offset for the patch
    n = 8192
    fx, fy = patch.tile_x + 0.5 - 0.25, patch.tile_y + 0.5 + 0.25  # patch "10": bottom-left quarter
    lon = fx / n * 360 - 180
    lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * fy / n))))
    assert (row["tile_x"], row["tile_y"], row["patch"]) == (patch.tile_x, patch.tile_y, "10")
    assert row["lat"] == pytest.approx(lat, abs=1e-4) and row["lon"] == pytest.approx(lon, abs=1e-4)


def test_is_nodata_exactly_for_the_blank_patches(built, world, cache):
    blank = {p.file_name for p in world.chatearthnet.patches if p.nodata}
    assert blank
    for config in ("gpt35", "gpt35-multispectral"):
        dataset = load_dataset(str(built[0]), config, cache_dir=cache)
        flags = [zip(dataset[split]["file_name"], dataset[split]["is_nodata"]) for split in SPLITS]
        flagged = {name for split_flags in flags for name, is_nodata in split_flags if is_nodata}
        assert flagged == blank


def test_stack_bands_in_band_order(built, tree, cache):
    rows = load_dataset(str(built[0]), "gpt4v-multispectral", split="validation", cache_dir=cache)
    raw = rows.cast_column("red_edge", Image(decode=False))
    for decoded, undecoded in zip(rows.select(range(2)), raw.select(range(2))):
        name = decoded["file_name"]
        groups = ("rgb", "red_edge", "nir_swir")
        pngs = [np.asarray(PILImage.open(tree / layout.image_path(group, name))) for group in groups]
        expected = np.concatenate(pngs, axis=-1).transpose(2, 0, 1)
        assert layout.BANDS == ("B4", "B3", "B2", "B5", "B6", "B7", "B8", "B11", "B12")
        for row in (decoded, undecoded):
            stacked = stack_bands(row)
            assert stacked.shape == (9, 256, 256) and stacked.dtype == np.uint8
            assert np.array_equal(stacked, expected)
    rgb_row = load_dataset(str(built[0]), "gpt4v", split="validation", cache_dir=cache)[0]
    with pytest.raises(EarthvlError, match="red_edge"):
        stack_bands(rgb_row)


def test_bad_records_and_pngs_are_skipped_and_reported(world, tmp_path, cache, monkeypatch):
    source = tmp_path / "chatearthnet"
    shutil.copytree(world.chatearthnet.root, source)
    train = [name for name, _ in records(source, "gpt35", "train")]
    truncated, deleted_rgb, deleted_nir, garbage_red_edge = train[:4]
    png = source / layout.image_path("rgb", truncated)
    png.write_bytes(png.read_bytes()[:200])
    (source / layout.image_path("rgb", deleted_rgb)).unlink()
    (source / layout.image_path("nir_swir", deleted_nir)).unlink()
    (source / layout.image_path("red_edge", garbage_red_edge)).write_bytes(b"not a png")
    json_file = source / layout.json_path("gpt35", "train")
    rows = json.loads(json_file.read_text())
    bad_records = [{"img": "x.png", "caption": "a"}, {"image": "1_2_patch00.png", "caption": 5}]
    json_file.write_text(json.dumps(rows + bad_records))

    out = tmp_path / "out"
    monkeypatch.setattr(build, "CHUNK_RECORDS", 4)  # several chunks, written by two worker processes
    report = build_chatearthnet(source, out, configs=["gpt35", "gpt35-multispectral"], splits="train", progress=False, num_proc=2)

    reasons = {(s["config"], s["file_name"]): s["reason"] for s in report["skipped"]}
    json_name = layout.json_path("gpt35", "train")
    assert all(s["json_file"] == json_name and s["split"] == "train" for s in report["skipped"])
    for config in ("gpt35", "gpt35-multispectral"):
        assert reasons[config, truncated].startswith("corrupt PNG s2_rgb_images/s2_images/" + truncated)
        assert reasons[config, deleted_rgb] == f"missing PNG s2_rgb_images/s2_images/{deleted_rgb}"
        assert reasons[config, None] == "record has no 'image' or 'image_id' string"
        assert reasons[config, "1_2_patch00.png"].startswith("caption is not a string")
    assert reasons["gpt35-multispectral", deleted_nir] == f"missing PNG s2_band_8_11_12_images/{deleted_nir}"
    assert reasons["gpt35-multispectral", garbage_red_edge] == (
        f"s2_band_5_6_7_images/{garbage_red_edge} is not a PNG (unrecognised data)"
    )
    assert len(report["skipped"]) == 4 + 6
    assert report["rows"] == {"gpt35": {"train": len(train) - 2}, "gpt35-multispectral": {"train": len(train) - 4}}
    assert json.loads((out / "build_report.json").read_text()) == report

    dataset = load_dataset(str(out), "gpt35-multispectral", cache_dir=cache)
    assert list(dataset) == ["train"]
    assert dataset["train"]["file_name"] == train[4:]


def test_source_without_data_names_the_path(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(EarthvlError, match="no ChatEarthNet data in .*" + tmp_path.name + ".*json_files.zip"):
        build_chatearthnet(tmp_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_unknown_config_and_foreign_output_are_refused(tree, tmp_path):
    with pytest.raises(EarthvlError, match="gpt5.*choose from gpt35"):
        build_chatearthnet(tree, tmp_path / "out", configs=["gpt5"], progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    with pytest.raises(EarthvlError, match="not an earlier ChatEarthNet build"):
        build_chatearthnet(tree, foreign, progress=False)
    assert (foreign / "precious.txt").read_text() == "keep"


def test_card_parses_and_its_configs_match_the_folders(built):
    folder = built[0]
    card = DatasetCard.load(folder / "README.md")
    assert card.data.license == "cc-by-4.0"
    assert "image-to-text" in card.data.task_categories
    configs = card.data.configs
    assert sorted(c["config_name"] for c in configs) == sorted(p.name for p in (folder / "data").iterdir())
    assert [c["config_name"] for c in configs if c.get("default")] == ["gpt35"]
    for entry in configs:
        assert [f["split"] for f in entry["data_files"]] == list(SPLITS)
        for data_file in entry["data_files"]:
            matched = [p.name for p in folder.glob(data_file["path"])]
            assert matched == [f"{data_file['split']}-00000-of-00001.parquet"]
    assert "Yuan" in card.text and "Earth System Science Data" in card.text
    assert "B4, B3, B2, B5, B6, B7, B8, B11, B12" in card.text


def test_card_statistics_and_figures_describe_the_build(built, tree):
    folder = built[0]
    card = DatasetCard.load(folder / "README.md")
    header = next(line for line in card.text.splitlines() if line.startswith("| | "))
    assert header == "| | gpt35 | gpt4v |"
    stats = {source: caption_statistics(c for split in SPLITS for _, c in records(tree, source, split)) for source in ("gpt35", "gpt4v")}
    assert f"| vocabulary | {stats['gpt35'].vocabulary:,} | {stats['gpt4v'].vocabulary:,} |" in card.text
    assert f"| hapax legomena | {stats['gpt35'].hapax:,} | {stats['gpt4v'].hapax:,} |" in card.text
    for figure in ("samples", "locations", "caption_lengths"):
        assert f"](figures/{figure}.png)" in card.text
        with PILImage.open(folder / "figures" / f"{figure}.png") as image:
            assert image.format == "PNG" and image.width > 200


def test_shards_split_by_byte_budget(tree, tmp_path, cache):
    out = tmp_path / "out"
    build_chatearthnet(tree, out, configs="gpt4v", splits=["train"], progress=False, max_shard_bytes=1)
    expected = records(tree, "gpt4v", "train")
    total = len(expected)
    assert shards(out, "gpt4v") == [f"train-{i:05d}-of-{total:05d}.parquet" for i in range(total)]
    rows = load_dataset(str(out), "gpt4v", split="train", cache_dir=cache)
    assert list(zip(rows["file_name"], rows["caption"])) == expected


def test_interrupted_build_leaves_nothing_loadable_and_rebuild_replaces(tree, tmp_path, cache, monkeypatch):
    out = tmp_path / "out"
    real_finish, calls = build.ShardWriter.finish, []

    def failing_finish(self):
        calls.append(self.split)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real_finish(self)

    monkeypatch.setattr(build.ShardWriter, "finish", failing_finish)
    with pytest.raises(RuntimeError, match="disk full"):
        build_chatearthnet(tree, out, progress=False)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(build.ShardWriter, "finish", real_finish)
    first = build_chatearthnet(tree, out, configs=["gpt4v"], progress=False)
    before = {p.name: p.read_bytes() for p in (out / "data" / "gpt4v").iterdir()}

    # an interrupted rebuild keeps the earlier build intact
    calls.clear()
    monkeypatch.setattr(build.ShardWriter, "finish", failing_finish)
    with pytest.raises(RuntimeError):
        build_chatearthnet(tree, out, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert {p.name: p.read_bytes() for p in (out / "data" / "gpt4v").iterdir()} == before

    monkeypatch.setattr(build.ShardWriter, "finish", real_finish)
    second = build_chatearthnet(tree, out, configs=["gpt4v", "gpt35"], progress=False)
    assert second["rows"]["gpt4v"] == first["rows"]["gpt4v"]
    assert sorted(p.name for p in (out / "data").iterdir()) == ["gpt35", "gpt4v"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    rows = load_dataset(str(out), "gpt35", split="train", cache_dir=cache)
    assert rows.num_rows == len(records(tree, "gpt35", "train"))


def test_zenodo_source_downloads_the_needed_zips_then_builds(world, built, server, tmp_path, monkeypatch):
    zips = world.root / "chatearthnet_zenodo"
    names = [layout.ZIP_NAMES[key] for key in ("json", "rgb")]
    files = []
    for name in names:
        data = (zips / name).read_bytes()
        url = server.add(f"/records/{layout.ZENODO_RECORD}/files/{name}/content", body=data, content_type="application/zip")
        files.append({"key": name, "size": len(data), "checksum": f"md5:{hashlib.md5(data).hexdigest()}", "links": {"content": url}})
    server.add(f"/api/records/{layout.ZENODO_RECORD}", body=json.dumps({"files": files}).encode(), content_type="application/json")
    monkeypatch.setenv("EARTHVL_ZENODO_API", server.url("/api/records/{record}"))

    out = tmp_path / "out"
    report = build_chatearthnet("zenodo", out, configs="gpt35", download_dir=tmp_path / "zips", progress=False)

    assert sorted(p.name for p in (tmp_path / "zips").iterdir()) == sorted(names)  # no multispectral zip needed
    assert report["source_kind"] == "zip" and report["rows"]["gpt35"] == built[2]["zip"]["rows"]["gpt35"]
    for split in SPLITS:
        name = f"{split}-00000-of-00001.parquet"
        assert pq.read_table(out / "data" / "gpt35" / name).equals(pq.read_table(built[0] / "data" / "gpt35" / name))
    build_chatearthnet("zenodo:11003436", tmp_path / "again", configs="gpt35", download_dir=tmp_path / "zips", progress=False)
    assert server.hits[f"/records/{layout.ZENODO_RECORD}/files/{names[1]}/content"] == 1  # verified copy reused


def test_zenodo_source_without_network_fails_fast_with_the_way_out(tmp_path, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("EARTHVL_ZENODO_API", f"http://127.0.0.1:{port}/api/records/{{record}}")
    start = time.monotonic()
    with pytest.raises(EarthvlError, match=r"by hand into .*--source"):
        build_chatearthnet("https://zenodo.org/records/11003436", tmp_path / "out", download_dir=tmp_path / "zips", progress=False)
    assert time.monotonic() - start < 5
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------- hostile input


def png16(width: int, height: int) -> bytes:
    """A valid 16-bit-per-channel RGB PNG (which PIL opens as 8-bit mode RGB, hiding the depth)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + b"\x12\x34" * 3 * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def encoded(image: PILImage.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def zip_tree(root: Path, dest: Path, key: str, deflated: set[str] = frozenset(), extra: dict[str, bytes] | None = None) -> Path:
    """One Zenodo zip of an extracted tree; members named in `deflated` are deflated, `extra` adds members."""
    folder = layout.JSON_DIR if key == "json" else layout.IMAGE_DIRS[key]
    path = dest / layout.ZIP_NAMES[key]
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted((root / folder).rglob("*")):
            name = file.relative_to(root).as_posix()
            method = zipfile.ZIP_DEFLATED if name in deflated or key == "json" else zipfile.ZIP_STORED
            archive.write(file, name, compress_type=method)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


def patch_member(path: Path, name: str, *, flag_bits: int = 0, method: int | None = None, spoil: str | None = None) -> None:
    """Rewrite one member's headers (flag bits, compression method) or data in place, as a hostile archive would."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    local = info.header_offset
    start = local + 30 + sum(struct.unpack("<HH", data[local + 26 : local + 30]))
    if spoil == "crc":
        data[start + info.compress_size // 2] ^= 0xFF
    elif spoil == "deflate":
        data[start] = 0xFF  # BFINAL=1, BTYPE=11: a reserved block type, which zlib refuses
    headers = [local + 6]  # the local header's flags; the central directory entry's below
    position = data.find(b"PK\x01\x02")
    while position >= 0:
        length = struct.unpack("<H", data[position + 28 : position + 30])[0]
        if data[position + 46 : position + 46 + length] == name.encode():
            headers.append(position + 8)
        position = data.find(b"PK\x01\x02", position + 1)
    for flags in headers:
        if flag_bits:
            data[flags : flags + 2] = struct.pack("<H", struct.unpack("<H", data[flags : flags + 2])[0] | flag_bits)
        if method is not None:
            data[flags + 2 : flags + 4] = struct.pack("<H", method)
    path.write_bytes(bytes(data))


def test_hostile_members_are_skipped_and_reported_alike_with_one_or_two_processes(sample_world, tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    shutil.copytree(sample_world.chatearthnet.root, tree)
    names = [name for name, _ in records(tree, "gpt35", "train")]
    assert len(names) >= 16
    rgb = {name: layout.image_path("rgb", name) for name in names}
    gray = PILImage.new("RGB", (256, 256), (90, 100, 110))
    (tree / rgb[names[0]]).write_bytes(encoded(gray, "JPEG"))
    (tree / rgb[names[1]]).write_bytes(encoded(PILImage.new("RGB", (1, 1))))
    (tree / rgb[names[2]]).write_bytes(png16(256, 256))
    (tree / rgb[names[3]]).write_bytes(encoded(gray.convert("P")))
    (tree / layout.image_path("red_edge", names[4])).write_bytes(encoded(PILImage.new("RGB", (128, 128))))
    json_file = tree / layout.json_path("gpt35", "train")
    rows = json.loads(json_file.read_text())
    hostile_rows = [
        {"image": "1_99999999_patch00.png", "caption": "far south"},
        {"image": "9000_100_patch00.png", "caption": "far east"},
        {"image": names[5], "caption": "the same patch again"},
    ]
    json_file.write_text(json.dumps(rows + hostile_rows))

    zips = tmp_path / "zips"
    zips.mkdir()
    zip_tree(tree, zips, "json")
    rgb_zip = zip_tree(tree, zips, "rgb", extra={f"copy/{names[10]}": b"not the real one"})
    zip_tree(tree, zips, "red_edge")
    nir = zip_tree(
        tree, zips, "nir_swir", deflated={layout.image_path("nir_swir", names[9])},
        extra={f"a/{names[11]}": b"one", f"b/{names[11]}": b"two"},
    )
    with zipfile.ZipFile(nir) as archive:  # names[11] only under other folders: ambiguous
        kept = [(i, archive.read(i)) for i in archive.infolist() if i.filename != layout.image_path("nir_swir", names[11])]
    with zipfile.ZipFile(nir, "w") as archive:
        for info, data in kept:
            archive.writestr(info, data)
    patch_member(rgb_zip, rgb[names[6]], spoil="crc")
    patch_member(rgb_zip, rgb[names[7]], flag_bits=0x1)
    patch_member(rgb_zip, rgb[names[8]], method=9)
    patch_member(nir, layout.image_path("nir_swir", names[9]), spoil="deflate")

    monkeypatch.setattr(build, "CHUNK_RECORDS", 4)  # several chunks, so that two workers share the split
    configs = ["gpt35", "gpt35-multispectral"]
    reports = {
        n: build_chatearthnet(zips, tmp_path / f"out{n}", configs=configs, splits="train", progress=False, num_proc=n)
        for n in (1, 2)
    }
    assert reports[1] == reports[2]
    report = reports[1]
    reasons = {(s["config"], s["file_name"], s["record"]): s["reason"] for s in report["skipped"]}
    by_name = {(config, name): reason for (config, name, _), reason in reasons.items()}
    for config in configs:
        assert by_name[config, names[0]] == f"{rgb[names[0]]} is not a PNG (JPEG data)"
        assert by_name[config, names[1]] == f"{rgb[names[1]]} is 1x1 px, expected 256x256"
        assert by_name[config, names[2]] == f"{rgb[names[2]]} is a 16-bit RGB PNG, expected 8-bit RGB"
        assert by_name[config, names[3]] == f"{rgb[names[3]]} is an 8-bit palette PNG, expected 8-bit RGB"
        assert by_name[config, names[6]].startswith(f"cannot read {rgb[names[6]]} in s2_rgb_images.zip: Bad CRC-32")
        assert by_name[config, names[7]] == f"cannot read {rgb[names[7]]} in s2_rgb_images.zip: it is encrypted"
        assert by_name[config, names[8]].startswith(
            f"cannot read {rgb[names[8]]} in s2_rgb_images.zip: compression method 9 (deflate64) is not supported"
        )
        assert by_name[config, "1_99999999_patch00.png"] == "tile 1_99999999 is outside the zoom-13 grid (0 to 8191)"
        assert by_name[config, "9000_100_patch00.png"] == "tile 9000_100 is outside the zoom-13 grid (0 to 8191)"
        duplicate = reasons[config, names[5], len(rows) + 2]
        assert duplicate == f"duplicate file name {names[5]}: first in {layout.json_path('gpt35', 'train')} record {names.index(names[5])}"
    assert by_name["gpt35-multispectral", names[4]] == (
        f"{layout.image_path('red_edge', names[4])} is 128x128 px, expected 256x256"
    )
    nir_member = layout.image_path("nir_swir", names[9])
    assert by_name["gpt35-multispectral", names[9]].startswith(f"cannot read {nir_member} in s2_band_8_11_12_images.zip: Error -3")
    assert by_name["gpt35-multispectral", names[11]] == (
        f"2 members named {names[11]} in s2_band_8_11_12_images.zip, none at {layout.image_path('nir_swir', names[11])}: "
        f"a/{names[11]}, b/{names[11]}"
    )
    assert ("gpt35", names[4]) not in by_name and ("gpt35", names[11]) not in by_name
    assert report["duplicate_members"] == {
        "s2_rgb_images.zip": {names[10]: [f"copy/{names[10]}", rgb[names[10]]]},
        "s2_band_8_11_12_images.zip": {names[11]: [f"a/{names[11]}", f"b/{names[11]}"]},
    }
    assert report["rows"]["gpt35"]["train"] == len(names) - 7
    assert report["rows"]["gpt35-multispectral"]["train"] == len(names) - 10
    table = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "out2" / "data" / "gpt35").glob("train-*")))
    built_names = table.column("file_name").to_pylist()
    assert built_names == [n for i, n in enumerate(names) if i not in (0, 1, 2, 3, 6, 7, 8)]
    row = table.to_pylist()[built_names.index(names[10])]
    assert row["image"]["bytes"] == (tree / rgb[names[10]]).read_bytes()  # the member at the upstream path wins


def test_a_bad_json_member_is_an_error_naming_it(sample_world, tmp_path):
    tree = sample_world.chatearthnet.root
    member = layout.json_path("gpt4v", "validation")
    for spoil in ("crc", "deflate"):
        zips = tmp_path / spoil
        zips.mkdir()
        zip_tree(tree, zips, "json")
        zip_tree(tree, zips, "rgb")
        patch_member(zips / "json_files.zip", member, spoil=spoil)
        with pytest.raises(EarthvlError, match=f"cannot read caption file {member} in json_files.zip: "):
            build_chatearthnet(zips, tmp_path / "out", configs="gpt4v", progress=False, num_proc=1)
    zips = tmp_path / "encrypted"
    zips.mkdir()
    zip_tree(tree, zips, "json")
    zip_tree(tree, zips, "rgb")
    patch_member(zips / "json_files.zip", member, flag_bits=0x1)
    with pytest.raises(EarthvlError, match=f"cannot read caption file {member} in json_files.zip: it is encrypted"):
        build_chatearthnet(zips, tmp_path / "out", configs="gpt4v", progress=False, num_proc=1)
    copy = tmp_path / "tree"
    shutil.copytree(tree, copy)
    (copy / member).write_text("[" * 100_000)
    with pytest.raises(EarthvlError, match=f"caption file {member} nests its JSON too deeply to be read"):
        build_chatearthnet(copy, tmp_path / "out", configs="gpt4v", progress=False, num_proc=1)
    assert not (tmp_path / "out").exists()


def test_caption_json_members_are_capped_before_they_are_read(sample_world, tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    shutil.copytree(sample_world.chatearthnet.root, tree)
    member = layout.json_path("gpt4v", "train")
    (tree / member).write_text("[" + " " * 3_000_000 + "]")  # ~3 MB that deflate shrinks about 1000-fold
    zip_tree(tree, tmp_path, "json")
    zip_tree(tree, tmp_path, "rgb")
    with pytest.raises(EarthvlError, match=f"cannot read caption file {member} in json_files.zip: it inflates .* over the limit of 100 to 1"):
        build_chatearthnet(tmp_path, tmp_path / "out", configs="gpt4v", progress=False, num_proc=1)
    monkeypatch.setattr(build, "MAX_JSON_BYTES", 1000)
    (tree / member).write_text(json.dumps([{"image": "1_1_patch00.png", "caption": "x" * 2000}]))
    zip_tree(tree, tmp_path, "json")
    with pytest.raises(EarthvlError, match=f"cannot read caption file {member} in json_files.zip: it is 2,0.. bytes, over the limit of 1,000"):
        build_chatearthnet(tmp_path, tmp_path / "out", configs="gpt4v", progress=False, num_proc=1)
    with pytest.raises(EarthvlError, match=f"cannot read caption file {tree / member}: it is 2,0.. bytes, over the limit of 1,000"):
        build_chatearthnet(tree, tmp_path / "out", configs="gpt4v", progress=False, num_proc=1)


def test_a_config_without_usable_records_names_the_files_and_why(sample_world, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(sample_world.chatearthnet.root, tree)
    for split in SPLITS:
        for name, _ in records(tree, "gpt4v", split):
            (tree / layout.image_path("rgb", name)).unlink(missing_ok=True)
    with pytest.raises(EarthvlError) as error:
        build_chatearthnet(tree, tmp_path / "out", configs="gpt4v", splits=["train", "test"], progress=False, num_proc=1)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("no usable record for gpt4v: every record of ")
    for split in ("train", "test"):
        assert f"{layout.json_path('gpt4v', split)} ({len(records(tree, 'gpt4v', split))} records)" in message
    assert "was skipped, e.g. missing PNG s2_rgb_images/s2_images/" in message
    assert "caption_statistics" not in message


def test_patch_center_refuses_tiles_outside_the_grid():
    assert layout.patch_center(8191, 0, "11")[1] < 180
    for x, y in ((8192, 0), (0, 8192), (-1, 5), (1, 99999999)):
        with pytest.raises(ValueError, match="outside the zoom-13 grid"):
            layout.patch_center(x, y, "00")


def test_a_split_with_no_row_is_not_written_and_loads_without_it(sample_world, tmp_path, cache):
    tree = tmp_path / "tree"
    shutil.copytree(sample_world.chatearthnet.root, tree)
    for name, _ in records(tree, "gpt35", "test"):
        (tree / layout.image_path("rgb", name)).unlink(missing_ok=True)
    out = tmp_path / "out"
    report = build_chatearthnet(tree, out, configs="gpt35", progress=False, num_proc=1)
    assert report["rows"]["gpt35"]["test"] == 0 and report["empty_splits"] == {"gpt35": ["test"]}
    assert shards(out, "gpt35") == ["train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]
    loaded = load_dataset(str(out), "gpt35", cache_dir=cache)
    assert {split: len(rows) for split, rows in loaded.items()} == {
        split: len(records(tree, "gpt35", split)) for split in ("train", "validation")
    }
    card = DatasetCard.load(out / "README.md")
    assert [f["split"] for f in card.data.configs[0]["data_files"]] == ["train", "validation"]
    assert "Splits without rows are not written: `gpt35` test." in card.text
