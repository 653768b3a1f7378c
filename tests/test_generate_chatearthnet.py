"""`earthvl generate chatearthnet`: template and server backends, refusals, resumption, and the build of its output."""

import base64
import io
import json
import os
import shutil

import numpy as np
import pytest
import tifffile
from hostile_files import png_declaring
from llm_servers import chat_route, completion_body, sent_requests
from PIL import Image

from earthvl.builders.chatearthnet import generation, layout
from earthvl.cli import main as cli

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Four sample tiles (16 patches, one blank) as ChatEarthNet's tree, and their maps in mixed encodings."""
    from earthvl.sample.chatearthnet import write_chatearthnet

    root = tmp_path_factory.mktemp("gen")
    world = write_chatearthnet(root / "world", 4, 11, keep_label_maps=True, progress=False)
    labels = root / "labels"
    labels.mkdir()
    codes = np.array([c.worldcover_code for c in generation.LAND_COVER_CLASSES], dtype=np.uint8)
    for i, patch in enumerate(world.patches):
        stem = patch.file_name[:-4]
        if i % 3 == 1:
            tifffile.imwrite(labels / f"{stem}.tif", codes[patch.label_map])
        else:
            Image.fromarray(generation.colour_map(patch.label_map)).save(labels / patch.file_name)
    return world, labels


def run(*args):
    return cli(["generate", "chatearthnet", "--quiet", *map(str, args)])


def report_of(out):
    return json.loads((out / "generation_report.json").read_text())


def test_template_backend_writes_a_layout_that_builds(inputs, tmp_path):
    world, labels = inputs
    out = tmp_path / "out"
    assert run("--images", world.root, "--labels", labels, "--out", out) == 0
    report = report_of(out)
    assert report["patches"] == {"found": 16, "usable": 16, "refused": 0}
    assert {s: sum(n.values()) for s, n in report["rows"].items()} == {"gpt35": 16, "gpt4v": 16}
    by_split = {}
    for split in layout.SPLITS:
        for record in json.loads((out / layout.json_path("gpt35", split)).read_text()):
            x, y, _ = layout.parse_patch_file_name(record["image"])
            by_split.setdefault((x, y), set()).add(split)
            assert (out / layout.image_path("nir_swir", record["image"])).is_file()
    assert len(by_split) == 4 and all(len(s) == 1 for s in by_split.values())  # a tile's patches share a split
    built = tmp_path / "built"
    assert cli(["build", "chatearthnet", "--source", str(out), "--out", str(built), "--quiet", "--num_proc", "1"]) == 0
    rows = json.loads((built / "build_report.json").read_text())["rows"]
    assert sum(rows["gpt35"].values()) == 16 and sum(rows["gpt4v-multispectral"].values()) == 16


def test_bad_maps_are_refused_per_patch(inputs, tmp_path):
    world, labels = inputs
    bad = tmp_path / "labels"
    shutil.copytree(labels, bad)
    names = [p.file_name[:-4] for p in world.patches]
    for f in bad.glob(f"{names[0]}.*"):
        f.unlink()
    Image.new("RGB", (128, 128)).save(next(bad.glob(f"{names[2]}.*")).with_suffix(".png"))
    for f in bad.glob(f"{names[2]}.tif"):
        f.unlink()
    odd = generation.colour_map(world.patches[3].label_map)
    odd[5, 5] = (7, 7, 7)
    Image.fromarray(odd).save(bad / f"{names[3]}.png")
    out = tmp_path / "out"
    assert run("--images", world.root, "--labels", bad, "--out", out, "--styles", "gpt35", "gpt4v") == 0
    report = report_of(out)
    reasons = {r["patch"]: r["reason"] for r in report["refused"]}
    assert "no land-cover map" in reasons[f"{names[0]}.png"]
    assert "map is 128x128 px, its image 256x256 px" in reasons[f"{names[2]}.png"]
    assert "colour(s) not in ChatEarthNet's land-cover table" in reasons[f"{names[3]}.png"]
    assert report["patches"]["refused"] == 3 and sum(report["rows"]["gpt35"].values()) == 13
    # gpt4v needs whole tiles: the other patch of the first tile is refused for gpt4v only
    assert sum(report["rows"]["gpt4v"].values()) == 12
    assert [r["patch"] for r in report["refused"] if r.get("style") == "gpt4v"] == [f"{names[1]}.png"]


def test_geotiff_patches_become_the_three_png_groups(inputs, tmp_path):
    world, labels = inputs
    images = tmp_path / "tif"
    images.mkdir()
    patch = world.patches[5]
    bands = np.concatenate(
        [np.asarray(Image.open(world.root / layout.image_path(g, patch.file_name))) for g in layout.BAND_GROUPS], -1
    ).astype(np.uint16) * 10
    tifffile.imwrite(images / (patch.file_name[:-4] + ".tif"), bands)
    out = tmp_path / "out"
    assert run("--images", images, "--labels", labels, "--out", out, "--styles", "gpt35", "--reflectance_max", 2550) == 0
    rgb = np.asarray(Image.open(out / layout.image_path("rgb", patch.file_name)))
    assert np.array_equal(rgb, np.asarray(Image.open(world.root / layout.image_path("rgb", patch.file_name))))


def test_nonsense_inputs_are_clear_errors(inputs, tmp_path, capsys):
    world, labels = inputs
    assert run("--images", tmp_path / "nope", "--labels", labels, "--out", tmp_path / "o") == 2
    assert "--images" in capsys.readouterr().err
    (tmp_path / "no_maps").mkdir()
    assert run("--images", world.root, "--labels", tmp_path / "no_maps", "--out", tmp_path / "o") == 2
    assert "no usable patch" in capsys.readouterr().err
    assert run("--images", world.root, "--labels", labels, "--out", tmp_path / "o", "--backend", "openai") == 2
    assert "--model is needed" in capsys.readouterr().err


def one_tile(world, labels, root):
    """A flat folder of one tile's four RGB patches and a folder of their maps, under `root`; the patch names."""
    images, maps = root / "images", root / "maps"
    images.mkdir()
    maps.mkdir()
    names = [patch.file_name for patch in world.patches[:4]]
    for name in names:
        shutil.copy(world.root / layout.image_path("rgb", name), images / name)
        shutil.copy(next(labels.glob(f"{name[:-4]}.*")), maps)
    return images, maps, names


def test_hostile_patches_and_maps_are_refused_with_the_reason(inputs, tmp_path):
    world, labels = inputs
    images, maps, names = one_tile(world, labels, tmp_path)
    (images / names[0]).write_bytes(png_declaring(100_000, 100_000))
    tiff = io.BytesIO()
    tifffile.imwrite(tiff, np.zeros((9, 256, 256), np.uint16))
    (images / names[1]).unlink()
    (images / names[1].replace(".png", ".tif")).write_bytes(tiff.getvalue()[: len(tiff.getvalue()) // 2])
    (images / names[2]).unlink()
    (images / names[2].replace(".png", ".tif")).write_bytes(b"II*\x00" + b"\x00" * 8)  # a TIFF without an image
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for folder, name in ((images, names[3]), (maps, names[3])):
        target = next(folder.glob(f"{name[:-4]}.*"))
        shutil.move(target, elsewhere / f"{folder.name}-{target.name}")
        os.symlink(elsewhere / f"{folder.name}-{target.name}", target)
    label_map = next(labels.glob(f"{names[3][:-4]}.*"))
    for name in ("9999_1_patch00", "8000_1_patch00"):  # the first outside the zoom-13 grid
        shutil.copy(world.root / layout.image_path("rgb", names[3]), images / f"{name}.png")
        shutil.copy(label_map, maps / f"{name}{label_map.suffix}")
    out = tmp_path / "out"
    assert run("--images", images, "--labels", maps, "--out", out, "--styles", "gpt35") == 0
    report = report_of(out)
    reasons = {entry["patch"]: entry["reason"] for entry in report["refused"]}
    assert report["patches"] == {"found": 6, "usable": 1, "refused": 5} and set(reasons) == {*names, "9999_1_patch00.png"}
    assert "exceeds limit" in reasons[names[0]]
    assert "cannot read the GeoTIFF: ValueError: failed to read" in reasons[names[1]]
    assert "cannot read the GeoTIFF: it holds no image" in reasons[names[2]]
    assert f"{names[3]} is a symbolic link out of --images" in reasons[names[3]]
    assert "tile 9999_1 is outside the zoom-13 grid" in reasons["9999_1_patch00.png"]
    assert [r["image"] for s in layout.SPLITS for r in json.loads((out / layout.json_path("gpt35", s)).read_text())] == [
        "8000_1_patch00.png"
    ]
    os.unlink(images / names[3])
    shutil.copy(world.root / layout.image_path("rgb", names[3]), images / names[3])
    assert run("--images", images, "--labels", maps, "--out", out, "--styles", "gpt35") == 0
    assert "is a symbolic link out of" in {e["patch"]: e["reason"] for e in report_of(out)["refused"]}[names[3]]


def test_an_output_that_overlaps_the_inputs_or_is_a_link_is_refused(inputs, tmp_path, capsys):
    world, labels = inputs
    tree = tmp_path / "tree"
    shutil.copytree(world.root, tree)
    before = sorted((p.name, p.stat().st_size) for p in tree.rglob("*.png"))
    assert run("--images", tree, "--labels", labels, "--out", tree) == 2
    assert f"the output folder {tree} is --images {tree}" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_size) for p in tree.rglob("*.png")) == before
    assert run("--images", tree, "--labels", labels, "--out", tree / "out") == 2
    assert "lies inside --images" in capsys.readouterr().err
    assert run("--images", tree / layout.IMAGE_DIRS["rgb"], "--labels", labels, "--out", tree) == 2
    assert "holds --images" in capsys.readouterr().err
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert run("--images", tree, "--labels", labels, "--out", tmp_path / "link") == 2
    assert "is a symbolic link (to" in capsys.readouterr().err and not any((tmp_path / "real").iterdir())


def test_server_backend_sends_upstream_prompts_and_resumes(inputs, tmp_path, server):
    world, labels = inputs
    url = chat_route(server, "A caption from the server.", prompt_tokens=500, completion_tokens=100)
    out = tmp_path / "out"
    common = ["--images", world.root, "--labels", labels, "--out", out, "--styles", "gpt35", "--backend", "openai",
              "--base_url", url, "--model", "m", "--price_per_1k_input", "1", "--price_per_1k_output", "2"]
    assert run(*common, "--max_requests", "5", "--concurrency", "2") == 0
    report = report_of(out)
    blank = sum(1 for p in world.patches if p.nodata)
    assert report["accounting"]["gpt35"]["requests"] == 5 and report["cost"] == pytest.approx(5 * 0.7)
    assert sum(f["reason"] == "not run: stopped by max_requests" for f in report["failures"]) == 16 - blank - 5
    sent = sent_requests(server)[0]
    assert sent["messages"][0]["content"] == generation.prompt_data("gpt35")["system"]
    assert sent["messages"][1]["content"].startswith("Analyze the provided image as an AI visual assistant.")
    assert sent["max_tokens"] == 300
    assert run(*common) == 0
    report = report_of(out)
    assert report["accounting"]["gpt35"]["cached"] == 5 and report["accounting"]["gpt35"]["requests"] == 16 - blank - 5
    assert report["failures"] == [] and sum(report["rows"]["gpt35"].values()) == 16
    assert server.hits[CHAT] == 16 - blank
    captions = [r["caption"] for s in layout.SPLITS for r in json.loads((out / layout.json_path("gpt35", s)).read_text())]
    assert captions.count("A caption from the server.") == 16 - blank


def test_gpt4v_sends_four_maps_per_tile_and_needs_four_paragraphs(inputs, tmp_path, server):
    world, labels = inputs
    url = chat_route(server, "First.\n\nSecond.\n\nThird.\n\nFourth.")
    out = tmp_path / "out"
    common = ["--images", world.root, "--labels", labels, "--out", out, "--styles", "gpt4v", "--backend", "openai",
              "--base_url", url, "--model", "m"]
    assert run(*common) == 0
    sent = sent_requests(server)
    assert len(sent) == 4 and sent[0]["max_tokens"] == 1200
    parts = sent[0]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url", "image_url", "image_url"]
    image = Image.open(io.BytesIO(base64.b64decode(parts[1]["image_url"]["url"].split(",", 1)[1])))
    assert image.size == (128, 128)
    records = {r["image"]: r["caption"] for s in layout.SPLITS
               for r in json.loads((out / layout.json_path("gpt4v", s)).read_text())}
    assert {records[p.file_name] for p in world.patches if p.patch == "10"} == {"Third."}
    server.routes[CHAT].body = completion_body("Only one paragraph.")
    assert run(*common, "--generation_seed", "1", "--seed", "5") == 0  # new sampling settings: new cache keys
    report = report_of(out)
    assert {f["reason"] for f in report["failures"]} == {"unusable answer: expected 4 paragraphs (one per patch), got 1"}
    assert len(report["failures"]) == 4


@pytest.mark.slow
def test_transformers_serve_captions_build(inputs, tmp_path, transformers_server):
    world, labels = inputs
    out = tmp_path / "out"
    assert run("--images", world.root, "--labels", labels, "--out", out, "--styles", "gpt35", "--backend", "openai",
               "--base_url", transformers_server.base_url, "--model", transformers_server.model, "--max_tokens", "12",
               "--seed", "0", "--concurrency", "2") == 0
    report = report_of(out)
    assert report["failures"] == [] and sum(report["rows"]["gpt35"].values()) == 16
    assert report["tokens"] > 16 * 100
    built = tmp_path / "built"
    assert cli(["build", "chatearthnet", "--source", str(out), "--out", str(built), "--quiet", "--num_proc", "1",
                "--configs", "gpt35"]) == 0


@pytest.mark.slow
def test_transformers_backend_captions_both_styles_locally(inputs, tmp_path):
    from earthvl.model_names import resolve_model
    from earthvl.models.tiny import long_context_copy

    world, labels = inputs
    model = long_context_copy(resolve_model("tiny-llava"), tmp_path / "tiny-llava-4k")
    out = tmp_path / "out"
    assert run("--images", world.root, "--labels", labels, "--out", out, "--backend", "transformers", "--model", model,
               "--device", "cpu", "--max_tokens", "6", "--batch_size", "4", "--seed", "0") == 0
    report = report_of(out)
    assert report["accounting"]["gpt35"]["requests"] == 16 - sum(1 for p in world.patches if p.nodata)
    assert report["accounting"]["gpt4v"]["requests"] == 4
    # random weights rarely answer in four paragraphs: each tile is then a reported failure, never a silent gap
    gpt4v_rows = sum(report["rows"].get("gpt4v", {}).values())
    assert gpt4v_rows + 4 * sum(f["style"] == "gpt4v" for f in report["failures"]) == 16
    assert all(f["reason"].startswith("unusable answer") for f in report["failures"])
    assert report["accounting"]["gpt4v"]["prompt_tokens"] > 4 * 4 * 64  # four images of 64 tokens per request


def test_spatiotemporal_splits_keep_tiles_whole(inputs, tmp_path):
    world, labels = inputs
    tiles = sorted({f"{p.tile_x}_{p.tile_y}" for p in world.patches})
    dates = tmp_path / "dates.json"
    dates.write_text(json.dumps({t: f"2021-{1 + 3 * i:02d}-15" for i, t in enumerate(tiles)}))
    out = tmp_path / "out"
    assert run("--images", world.root, "--labels", labels, "--out", out, "--styles", "gpt35",
               "--split_by", "spatiotemporal", "--dates", dates) == 0
    split_of = {}
    for split in layout.SPLITS:
        for record in json.loads((out / layout.json_path("gpt35", split)).read_text()):
            split_of.setdefault(record["image"].rsplit("_patch", 1)[0], set()).add(split)
    assert sorted(split_of) == tiles and all(len(s) == 1 for s in split_of.values())
    assert report_of(out)["split_by"] == "spatiotemporal"
