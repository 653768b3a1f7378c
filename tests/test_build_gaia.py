"""The GAIA builder against a sample world: both configs load offline with the upstream fields, pixels come
from shards or a folder untouched, bad records, corrupt images and truncated shards are skipped and reported."""

import io
import json
import shutil
import tarfile
import time

import pyarrow.parquet as pq
import pytest
from datasets import Image, List, Value, load_dataset
from huggingface_hub import DatasetCard
from PIL import Image as PILImage

from earthvl import cli
from earthvl.builders.gaia import build, layout
from earthvl.builders.gaia.build import build_gaia, load_records, strip_caption_prefix
from earthvl.cards.statistics import caption_statistics
from earthvl.errors import EarthvlError
from earthvl.sample import generate_sample
from fake_http import fast

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_sample(tmp_path_factory.mktemp("world"), tiles=3, seed=5, gaia_images=40, progress=False)


@pytest.fixture(scope="module")
def source(world):
    return world.gaia.root


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "gaia"
    return out, build_gaia(source, out, progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture
def copy(source, tmp_path):
    """A private copy of the GAIA source, free to damage."""
    return shutil.copytree(source, tmp_path / "gaia_source")


def shard_images(source, split):
    """id -> PNG bytes, read from the shards independently of the builder."""
    images = {}
    for shard in sorted((source / layout.shard_dir(split)).glob("*.tar")):
        with tarfile.open(shard) as archive:
            members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
        for name, data in members.items():
            if name.endswith(".json"):
                images[json.loads(data)["id"]] = members[name[: -len(".json")] + ".png"]
    return images


def test_both_configs_load_with_upstream_fields_and_official_splits(built, world, source, cache):
    out, report = built
    downloaded = {s.record["id"] for s in world.gaia.scenes if s.downloaded}
    for split in SPLITS:
        records = load_records(source / layout.json_path(split))
        metadata = load_dataset(str(out), "metadata", split=split, cache_dir=cache)
        default = load_dataset(str(out), "default", split=split, cache_dir=cache)
        assert metadata.column_names == list(layout.FIELDS)
        assert default.column_names == ["image", *layout.FIELDS]
        assert metadata["id"] == [r["id"] for r in records]
        assert default["id"] == [r["id"] for r in records if r["id"] in downloaded]
        for row, record in zip(metadata, records):
            assert row == {name: record[name] for name in layout.FIELDS}  # lists as lists, nulls as nulls
        assert report["rows"]["metadata"][split] == len(records)
    features = load_dataset(str(out), "default", split="train", cache_dir=cache).features
    assert features["id"] == Value("int64") and features["lat"] == Value("float64")
    assert features["captions"] == List(Value("string")) and isinstance(features["image"], Image)
    assert any(value is None for s in world.gaia.scenes for value in s.record.values())  # nulls really exercised


def test_validation_split_in_column_orientation_keeps_record_order(source):
    raw = json.loads((source / layout.json_path("validation")).read_text())
    assert isinstance(raw, dict)  # the sample writes this split the pandas way
    records = load_records(source / layout.json_path("validation"))
    assert [r["id"] for r in records] == [raw["id"][k] for k in sorted(raw["id"], key=int)]


def test_records_load_in_every_orientation_pandas_writes(source, tmp_path):
    records = load_records(source / layout.json_path("train"))
    columns = {name: {str(i): r[name] for i, r in enumerate(records)} for name in layout.FIELDS}
    index = {str(i): r for i, r in enumerate(records)}
    for name, data in {"records": records, "columns": columns, "index": index}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
        assert load_records(tmp_path / f"{name}.json") == records, name
    (tmp_path / "scalar.json").write_text("42")
    with pytest.raises(EarthvlError, match=r"scalar.json holds neither a list of records nor a pandas"):
        load_records(tmp_path / "scalar.json")


def test_pixels_are_the_shard_bytes_untouched(built, source):
    out, _ = built
    for split in SPLITS:
        expected = shard_images(source, split)
        table = pq.read_table(sorted((out / "data" / "default").glob(f"{split}-*.parquet")))
        for sample_id, image in zip(table.column("id").to_pylist(), table.column("image").to_pylist()):
            assert image["bytes"] == expected[sample_id]
            assert image["path"] == f"{sample_id}.png"


def test_failed_downloads_are_reported_not_dropped(built, world):
    _, report = built
    failed = {s.record["id"] for s in world.gaia.scenes if not s.downloaded}
    assert failed
    skipped = {entry["id"] for entry in report["skipped"]}
    assert skipped == failed
    assert all(entry["config"] == "default" and "no image with id" in entry["reason"] for entry in report["skipped"])
    assert sum(split["failed_downloads"] for split in report["images"].values()) == len(failed)


def test_card_yaml_parses_and_statistics_are_computed_on_the_build(built, source):
    out, report = built
    card = DatasetCard.load(out / "README.md")
    configs = {c["config_name"]: c for c in card.data.configs}
    assert set(configs) == {"default", "metadata"} and configs["default"].get("default") is True
    assert card.data.license == "mit"
    captions = [c for split in SPLITS for r in load_records(source / layout.json_path(split)) for c in r["captions"]]
    stats = caption_statistics(captions)
    assert f"| vocabulary | {stats.vocabulary:,} |" in card.text
    assert f"| total words | {stats.total_words:,} |" in card.text
    for figure in ("samples", "locations", "caption_lengths"):
        assert f"figures/{figure}.png" in card.text
        with PILImage.open(out / "figures" / f"{figure}.png") as image:
            assert image.width > 200


def test_strip_prefix(source, tmp_path, cache):
    build_gaia(source, tmp_path / "out", configs="metadata", splits="test", strip_prefix=True, progress=False)
    rows = load_dataset(str(tmp_path / "out"), "metadata", split="test", cache_dir=cache)
    records = load_records(source / layout.json_path("test"))
    for row, record in zip(rows, records):
        assert row["captions"] == [strip_caption_prefix(c) for c in record["captions"]]
        assert not any(c.startswith(layout.CAPTION_PREFIX) for c in row["captions"])
    assert strip_caption_prefix("The image showcases: a river.") == "A river."


def test_images_from_a_folder_with_a_corrupt_one(source, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    expected = shard_images(source, "test")
    for sample_id, data in expected.items():
        (images / f"{sample_id}.png").write_bytes(data)
    broken = sorted(expected)[0]
    (images / f"{broken}.png").write_bytes(expected[broken][:300])
    report = build_gaia(source, tmp_path / "out", configs="default", splits="test", images="folder", image_dir=images, progress=False)
    assert report["rows"]["default"]["test"] == len(expected) - 1
    reasons = {entry["id"]: entry["reason"] for entry in report["skipped"]}
    assert reasons[broken].startswith(f"corrupt image {broken}.png")
    table = pq.read_table(tmp_path / "out" / "data" / "default" / "test-00000-of-00001.parquet")
    assert all(cell["bytes"] == expected[i] for i, cell in zip(table.column("id").to_pylist(), table.column("image").to_pylist()))


def test_truncated_shard_keeps_the_intact_samples(copy, tmp_path):
    shard = copy / "train" / "00000.tar"
    with tarfile.open(shard) as archive:
        members = archive.getmembers()
    cut = members[len(members) // 2]
    with shard.open("r+b") as file:
        file.truncate(cut.offset_data + cut.size // 2)
    report = build_gaia(copy, tmp_path / "out", configs="default", splits="train", progress=False)
    intact = {json.loads(tarfile.open(shard).extractfile(m).read())["id"] for m in members[: members.index(cut)] if m.name.endswith(".json") and any(n.name == m.name[:-5] + ".png" for n in members[: members.index(cut)])}
    assert report["rows"]["default"]["train"] == len(intact)
    assert report["images"]["train"]["problems"] and "truncated" in json.dumps(report["images"]["train"]["problems"])
    records = load_records(copy / layout.json_path("train"))
    assert len(report["skipped"]) == len(records) - len(intact)


def test_bad_records_duplicates_and_wrong_types_are_skipped_with_reasons(copy, tmp_path):
    path = copy / layout.json_path("train")
    records = json.loads(path.read_text())
    records[1]["lat"] = "north"
    records[2]["captions"] = "one string"
    records[3] = ["not", "a", "record"]
    records.append(dict(records[0]))
    del records[4]["credits"]
    path.write_text(json.dumps(records))
    report = build_gaia(copy, tmp_path / "out", configs="metadata", splits="train", progress=False)
    reasons = [(entry["record"], entry["reason"]) for entry in report["skipped"]]
    assert reasons == [
        (1, "lat is not a number (got 'north')"),
        (2, "captions is not a list of strings (got 'one string')"),
        (3, "record is not a JSON object (got list)"),
        (len(records) - 1, f"duplicate id {records[0]['id']} (first seen in train record 0)"),
    ]
    assert report["rows"]["metadata"]["train"] == len(records) - 4
    assert report["field_counts"] == {"missing field 'credits'": 1}


def test_resize_downscales_and_never_upscales(source, tmp_path):
    small = build_gaia(source, tmp_path / "small", configs="default", splits="test", resize=48, progress=False)
    table = pq.read_table(tmp_path / "small" / "data" / "default" / "test-00000-of-00001.parquet")
    for cell in table.column("image").to_pylist():
        with PILImage.open(io.BytesIO(cell["bytes"])) as image:
            assert min(image.size) == 48
    assert small["images"]["test"]["resized"] == table.num_rows
    large = build_gaia(source, tmp_path / "large", configs="default", splits="test", resize=10_000, progress=False)
    assert large["images"]["test"]["resized"] == 0
    original = pq.read_table(tmp_path / "large" / "data" / "default" / "test-00000-of-00001.parquet")
    assert original.column("image").to_pylist() == [
        {"bytes": shard_images(source, "test")[i], "path": f"{i}.png"} for i in original.column("id").to_pylist()
    ]


def test_pixel_limit_skips_oversized_images(source, tmp_path):
    sizes = {i: PILImage.open(io.BytesIO(data)).size for i, data in shard_images(source, "train").items()}
    limit = min(w * h for w, h in sizes.values())
    report = build_gaia(source, tmp_path / "out", configs="default", splits="train", max_pixels=limit, progress=False)
    assert report["rows"]["default"]["train"] == sum(w * h <= limit for w, h in sizes.values())
    oversized = {e["id"] for e in report["skipped"] if f"over the limit of {limit:,} pixels" in e["reason"]}
    assert oversized == {i for i, (w, h) in sizes.items() if w * h > limit} != set()


def test_hub_source_offline_fails_fast_naming_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(EarthvlError, match=r"cannot download train_data.json.*azavras/GAIA.*--source"):
        build_gaia(layout.HUB_ID, tmp_path / "out", configs="metadata", progress=False)
    assert time.monotonic() - start < 10
    assert not (tmp_path / "out").exists()


def test_hub_source_downloads_the_metadata_files(source, tmp_path, monkeypatch):
    calls = []

    def fake_download(repo_id, filename, repo_type):
        calls.append((repo_id, filename, repo_type))
        return str(source / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    report = build_gaia(layout.HUB_ID, tmp_path / "out", configs="metadata", progress=False)
    assert calls == [(layout.HUB_ID, layout.json_path(s), "dataset") for s in SPLITS]
    assert report["source_kind"] == "hub" and sum(report["rows"]["metadata"].values()) == 40


def test_unusable_sources_name_the_path(copy, tmp_path):
    (copy / layout.json_path("test")).write_text("{not json")
    with pytest.raises(EarthvlError, match=r"test_data.json is not valid JSON"):
        build_gaia(copy, tmp_path / "out", progress=False)
    (copy / layout.json_path("test")).write_text(json.dumps([{"id": 1.5}]))
    with pytest.raises(EarthvlError, match="no usable GAIA record"):
        build_gaia(copy, tmp_path / "out", configs="metadata", splits="test", progress=False)
    (copy / layout.json_path("test")).write_text(json.dumps([{"id": "x"}]))  # nothing but an id: a row of nulls
    report = build_gaia(copy, tmp_path / "only-ids", configs="metadata", splits="test", progress=False)
    assert report["rows"] == {"metadata": {"test": 1}} and "no caption statistics" in (tmp_path / "only-ids" / "README.md").read_text()
    with pytest.raises(EarthvlError, match="no WebDataset shards"):
        shutil.rmtree(copy / "val")
        build_gaia(copy, tmp_path / "out", splits="validation", progress=False)
    assert not (tmp_path / "out").exists()


def test_rebuild_is_idempotent_and_an_interrupted_one_changes_nothing(source, tmp_path, monkeypatch):
    out = tmp_path / "out"
    build_gaia(source, out, progress=False)
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}
    build_gaia(source, out, progress=False)
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.parquet"))} == first

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "dataset_card", fail)
    with pytest.raises(KeyboardInterrupt):
        build_gaia(source, out, configs="metadata", progress=False)
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.parquet"))} == first
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_fetched_images_respect_opt_outs_and_report_failures(copy, server, tmp_path):
    expected = shard_images(copy, "test")
    path = copy / layout.json_path("test")
    records = json.loads(path.read_text())
    opted_out, missing = records[0]["id"], records[1]["id"]
    for record in records:
        sample_id = record["id"]
        headers = {"X-Robots-Tag": "noimageai"} if sample_id == opted_out else {}
        if sample_id != missing and sample_id in expected:
            record["image_src"] = server.add(f"/img/{sample_id}.jpg", body=expected[sample_id], headers=headers)
        else:
            record["image_src"] = server.url(f"/img/{sample_id}.jpg")  # 404
    path.write_text(json.dumps(records))
    images = tmp_path / "images"

    fetch = dict(images="fetch", image_dir=images, fetch_policy=fast(), progress=False)
    report = build_gaia(copy, tmp_path / "out", configs="default", splits="test", **fetch)

    reasons = {entry["id"]: entry["reason"] for entry in report["skipped"]}
    assert "opted out of AI use" in reasons[opted_out] and "HTTP 404" in reasons[missing]
    fetched = set(expected) - {opted_out, missing}
    assert report["rows"]["default"]["test"] == len(fetched) and set(reasons) == set(r["id"] for r in records) - fetched
    table = pq.read_table(tmp_path / "out" / "data" / "default" / "test-00000-of-00001.parquet")
    assert {i: c["bytes"] for i, c in zip(table.column("id").to_pylist(), table.column("image").to_pylist())} == {
        i: expected[i] for i in fetched
    }
    assert not (images / f"{opted_out}.png").exists()
    hits = sum(server.hits.values())
    again = ["build", "gaia", "--source", str(copy), "--out", str(tmp_path / "out"), "--configs", "default", "--splits",
             "test", "--images", "fetch", "--image_dir", str(images), "--quiet", "--allow_networks"]  # fmt: skip
    assert cli.main(again + ["intranet"]) == 2 and sum(server.hits.values()) == hits
    assert cli.main(again + ["127.0.0.0/8"]) == 0
    assert sum(server.hits.values()) - hits == 1  # a re-run only retries the failed download


def strict_json(path):
    """The JSON at `path`, refusing NaN and Infinity as strict parsers do."""
    return json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{path} holds a bare {name}"))


def test_hostile_values_are_skipped_with_reasons_in_a_strict_json_report(copy, tmp_path):
    path = copy / layout.json_path("train")
    records = json.loads(path.read_text())
    deep = []
    for _ in range(600):
        deep = [deep]
    records[1]["lat"] = 10**400  # an integer literal: float() of it overflows
    records[2]["captions"][3] = "a lone surrogate \ud800 in a caption"
    records[3]["id"] = 2**70
    records[4]["id"] = 100_000.9
    records[5]["id"] = True
    records[6]["id"] = float("nan")
    records[7]["tag"] = deep
    records[8]["location"] = "\udfff"
    records[9]["id"] = deep
    huge = "9" * 5000  # more digits than Python's int() converts
    path.write_text(json.dumps(records).replace(f'"lon": {json.dumps(records[10]["lon"])}', f'"lon": {huge}', 1))
    assert records[10]["lon"] is not None and huge in path.read_text()

    report = build_gaia(copy, tmp_path / "out", configs="metadata", splits="train", progress=False)

    reasons = {entry["record"]: entry["reason"] for entry in report["skipped"]}
    assert reasons == {
        1: "lat 100000000000000000...0000000000000000000 is out of range",
        2: "captions[3] is not valid Unicode (it holds a lone surrogate): 'a lone surrogate \\ud800 in a caption'",
        3: "id 1180591620717411303424 does not fit in int64",
        4: "id is not an integer or a string (got 100000.9)",
        5: "id is not an integer or a string (got True)",
        6: "id is not an integer or a string (got nan)",
        7: "tag is not a list of strings (got [[[[...]]]])",
        8: "location is not valid Unicode (it holds a lone surrogate): '\\udfff'",
        9: "id is not an integer or a string (got [[[[...]]]])",
        10: "lon is not a finite number (got inf)",
    }
    assert report["rows"]["metadata"]["train"] == len(records) - len(reasons)
    saved = strict_json(tmp_path / "out" / "build_report.json")
    ids = {entry["record"]: entry["id"] for entry in saved["skipped"]}
    assert (ids[3], ids[4], ids[5], ids[6], ids[9]) == (2**70, 100_000.9, True, None, "[[[[...]]]]")
    assert saved["id_type"] == "int64"
    table = pq.read_table(tmp_path / "out" / "data" / "metadata" / "train-00000-of-00001.parquet")
    assert table.schema.field("id").type == "int64"


def test_string_ids_keep_their_type_and_are_never_converted(copy, tmp_path, cache):
    images = tmp_path / "images"
    images.mkdir()
    pixels = {i: data for split in SPLITS for i, data in shard_images(copy, split).items()}
    renamed = {}
    for split in SPLITS:
        path = copy / layout.json_path(split)
        records = load_records(path)
        for index, record in enumerate(records):
            new_id = f"gaia-{split}-{index:03d}-x"
            if record["id"] in pixels:
                (images / f"{new_id}.png").write_bytes(pixels[record["id"]])
            renamed[new_id] = record["id"]
            record["id"] = new_id
        path.write_text(json.dumps(records))
    path = copy / layout.json_path("train")
    records = json.loads(path.read_text())
    records[0]["id"], records[1]["id"], records[2]["id"], records[3]["id"] = 7, "\u00b2", "0012", 12.0
    records[4]["id"] = records[5]["id"]
    path.write_text(json.dumps(records))

    report = build_gaia(copy, tmp_path / "out", configs=["metadata", "default"], images="folder", image_dir=images, progress=False)

    assert report["id_type"] == "string"
    train = load_dataset(str(tmp_path / "out"), "metadata", split="train", cache_dir=cache)
    assert train.features["id"] == Value("string")
    assert train["id"][:4] == ["7", "\u00b2", "0012", records[5]["id"]]
    skipped = {(entry["config"], entry["record"]): entry["reason"] for entry in report["skipped"] if entry["split"] == "train"}
    assert skipped[("metadata", 3)] == "id is not an integer or a string (got 12.0)"
    assert skipped[("metadata", 5)] == f"duplicate id {records[5]['id']} (first seen in train record 4)"
    test = load_dataset(str(tmp_path / "out"), "default", split="test", cache_dir=cache)
    assert test.features["id"] == Value("string") and len(test) == sum(1 for i in test["id"] if renamed[i] in pixels) > 0
    for row in test.with_format("arrow")[:]["image"].to_pylist():
        assert row["bytes"] == pixels[renamed[row["path"].rsplit(".", 1)[0]]]


def test_shard_ids_are_matched_exactly_and_duplicates_listed(copy, tmp_path, world):
    missing = sorted(s.record["id"] for s in world.gaia.scenes if s.split == "train" and not s.downloaded)
    present = sorted(s.record["id"] for s in world.gaia.scenes if s.split == "train" and s.downloaded)
    assert missing and present
    png = next(iter(shard_images(copy, "train").values()))
    with tarfile.open(copy / "train" / "00050.tar", "w") as archive:
        for index, sample_id in enumerate([missing[0] + 0.9, True, "\u00b2", present[0]]):
            for name, data in ((f"0005000{index:02d}.json", json.dumps({"id": sample_id}).encode()), (f"0005000{index:02d}.png", png)):
                member = tarfile.TarInfo(name)
                member.size = len(data)
                archive.addfile(member, io.BytesIO(data))

    report = build_gaia(copy, tmp_path / "out", configs="default", splits="train", progress=False)

    reasons = {entry["id"]: entry["reason"] for entry in report["skipped"]}
    assert reasons[missing[0]].startswith(f"no image with id {missing[0]}")  # 100xxx.9 is not truncated onto it
    problems = [p["problem"] for p in report["images"]["train"]["problems"] if p["shard"].endswith("00050.tar")]
    assert problems == [
        f"sample id is not an integer or a string (got {missing[0] + 0.9})",
        "sample id is not an integer or a string (got True)",
        f"duplicate sample id {present[0]} (the first one is used)",
    ]


def test_an_image_folder_with_odd_names_never_crashes(source, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    expected = shard_images(source, "test")
    for sample_id, data in expected.items():
        (images / f"{sample_id}.png").write_bytes(data)
    (images / "\u00b2.png").write_bytes(b"superscript two")
    (images / "\u0661\u0662.png").write_bytes(b"arabic-indic twelve")
    first = sorted(expected)[0]
    (images / f"{first}.webp").write_bytes(b"a second image of the same id")

    report = build_gaia(source, tmp_path / "out", configs="default", splits="test", images="folder", image_dir=images, progress=False)

    assert report["rows"]["default"]["test"] == len(expected)
    assert report["images"]["test"]["problems"] == [
        {"file": str(images / f"{first}.webp"), "problem": f"a second image of id {first} ({first}.png is used)"}
    ]


def test_a_json_file_that_cannot_be_parsed_is_one_line_naming_it(copy, tmp_path):
    (copy / layout.json_path("test")).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(EarthvlError, match=r"test_data.json cannot be read: it is nested too deeply") as caught:
        build_gaia(copy, tmp_path / "out", configs="metadata", splits="test", progress=False)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_fetch_with_duplicate_or_unusable_ids_fetches_the_rest(copy, server, tmp_path):
    png = next(iter(shard_images(copy, "test").values()))
    first, second, long_id = (server.add(f"/{name}.png", body=png) for name in ("first", "second", "long"))
    records = [{"id": "dup", "image_src": first}, {"id": "dup", "image_src": second}, {"id": "x" * 300, "image_src": long_id}]
    (copy / layout.json_path("test")).write_text(json.dumps(records))

    report = build_gaia(copy, tmp_path / "out", configs="default", splits="test", images="fetch",
                        image_dir=tmp_path / "images", fetch_policy=fast(), progress=False)  # fmt: skip

    assert report["rows"]["default"]["test"] == 1
    assert [(e["record"], e["reason"]) for e in report["skipped"]] == [
        (1, "duplicate id dup (first seen in test record 0)"),
        (2, "not fetched: the id is longer than 200 bytes and cannot name the image file"),
    ]
    assert dict(server.hits) == {"/first.png": 1}


def test_a_split_with_no_row_is_not_written_and_the_card_and_report_say_so(copy, tmp_path, cache):
    from earthvl.builders.folder import report_summary
    from earthvl.data import load_split

    path = copy / layout.json_path("test")
    records = json.loads(path.read_text())
    path.write_text(json.dumps([{**record, "captions": "one string"} for record in records]))
    out = tmp_path / "out"
    report = build_gaia(copy, out, progress=False)
    assert report["rows"]["default"]["test"] == report["rows"]["metadata"]["test"] == 0
    assert report["empty_splits"] == {"default": ["test"], "metadata": ["test"]}
    assert sum(entry["json_file"] == "test_data.json" for entry in report["skipped"]) == 2 * len(records)
    rows = report["rows"]["default"]
    summary = f"default: train {rows['train']}, validation {rows['validation']}, test 0 (not written)"
    assert rows["train"] and rows["validation"] and summary in report_summary("GAIA", out, report)
    for config in ("default", "metadata"):
        assert not list((out / "data" / config).glob("test-*"))
        loaded = load_dataset(str(out), config, cache_dir=cache)
        assert {split: len(table) for split, table in loaded.items()} == {
            split: report["rows"][config][split] for split in ("train", "validation")
        }
    card = DatasetCard.load(out / "README.md")
    assert all([f["split"] for f in entry["data_files"]] == ["train", "validation"] for entry in card.data.configs)
    assert "Splits without rows are not written: `default` test, `metadata` test." in card.text
    with pytest.raises(EarthvlError, match="config 'default' of .* has no split 'test'; it has train, validation"):
        load_split(str(out), "default", "test")


def test_a_config_with_no_row_in_any_split_is_an_error_naming_it(copy, tmp_path):
    (tmp_path / "no_images").mkdir()
    with pytest.raises(EarthvlError) as error:
        build_gaia(copy, tmp_path / "out", images="folder", image_dir=tmp_path / "no_images", progress=False)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"no usable GAIA record for default in {copy}: ")
    assert "no image" in message and not (tmp_path / "out").exists()
