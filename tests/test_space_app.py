"""The demo app's handlers against direct computations with the same tiny models, its messages for bad input,
settings resolution, galleries and the page's element ids (no browser)."""

import json
import shutil
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hostile_files import png_declaring
from PIL import Image

from earthvl.builders.chatearthnet.build import build_chatearthnet
from earthvl.builders.chatearthnet.landcover import CLASS_NAMES as LAND_COVER
from earthvl.data import load_split
from earthvl.errors import EarthvlError
from earthvl.eval.captioning import LLAVA_MAX_NEW_TOKENS
from earthvl.eval.classnames import EUROSAT, EUROSAT_TEMPLATES, REMOTE_SENSING_TEMPLATES, RESISC45
from earthvl.eval.generation import LlavaGenerator
from earthvl.models.clip import TextChunker, image_embeddings, text_embeddings, text_limit, zero_shot_classifier
from earthvl.prompts import CAPTION_INSTRUCTION
from earthvl.space import app as space_app
from earthvl.space.app import (
    DEMO_MAX_PIXELS,
    ELEM_IDS,
    ERROR_PREFIX,
    MAX_LABEL_CHARS,
    MAX_QUERY_CHARS,
    DemoApp,
    DemoSettings,
    build_demo,
    require_gradio,
    resolve_settings,
    shown,
)
from earthvl.space.gallery import GALLERY_FILE, make_gallery, read_gallery, sample_gallery


@pytest.fixture(scope="module")
def gallery(sample_gaia, tmp_path_factory):
    return make_gallery(sample_gaia, tmp_path_factory.mktemp("space") / "gallery", config="default", split="train", count=8, size=64)


@pytest.fixture(scope="module")
def app(gallery):
    return DemoApp(DemoSettings("tiny-llava", "tiny-clip", str(gallery)), device="cpu")


@pytest.fixture(scope="module")
def scene(sample_world):
    return sorted(sample_world.scenes.glob("*/*.png"))[0]


def rgb(path):
    return Image.open(path).convert("RGB")


def message(call, *args):
    with pytest.raises(EarthvlError) as error:
        call(*args)
    return str(error.value)


# --- handlers against direct computations ------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [CAPTION_INSTRUCTION, "Is there water in this image?"])
def test_caption_is_the_generators_answer(app, scene, prompt):
    vlm = app.vlm()
    expected = LlavaGenerator(vlm.model, vlm.processor, prompt, max_new_tokens=LLAVA_MAX_NEW_TOKENS)([rgb(scene)])[0]
    assert app.caption(str(scene), f"  {prompt}\n") == expected
    answer, status = app.ui_caption({"path": str(scene)}, prompt)
    assert (answer, status) == (expected, "Answered by `tiny-llava`.")


def direct_top5(app, path, names, templates):
    clip = app.clip()
    tokenizer = clip.processor.tokenizer
    chunker = TextChunker(tokenizer, text_limit(clip.model, tokenizer), mode="truncate")
    classifier = zero_shot_classifier(clip.model, chunker, names, templates)
    pixels = clip.processor(images=[rgb(path)], return_tensors="pt")["pixel_values"]
    probabilities = (100 * image_embeddings(clip.model, pixels) @ classifier.T).softmax(dim=-1)[0]
    top = probabilities.topk(min(5, len(names)))
    return [(names[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist())]


@pytest.mark.parametrize(
    "preset, names, templates",
    [
        ("Land cover", LAND_COVER, REMOTE_SENSING_TEMPLATES),
        ("EuroSAT", EUROSAT.prompts, EUROSAT_TEMPLATES),
        ("RESISC45", RESISC45.prompts, REMOTE_SENSING_TEMPLATES),
    ],
)
def test_preset_classification_matches_clip_benchmark_computation(app, scene, preset, names, templates):
    expected = direct_top5(app, scene, list(names), templates)
    scores = app.classify(str(scene), "", preset)
    assert list(scores) == [name for name, _ in expected]
    assert list(scores.values()) == pytest.approx([p for _, p in expected], abs=1e-6)
    assert len(scores) == 5 and sum(scores.values()) <= 1 + 1e-6


def test_typed_labels_take_precedence_over_the_preset(app, scene):
    expected = direct_top5(app, scene, ["forest", "river", "airport"], REMOTE_SENSING_TEMPLATES)
    scores = app.classify(str(scene), "forest, river\n airport,,Forest\n", "EuroSAT")
    assert list(scores) == [name for name, _ in expected]
    assert list(scores.values()) == pytest.approx([p for _, p in expected], abs=1e-6)
    assert sum(scores.values()) == pytest.approx(1, abs=1e-5)  # all three labels shown
    label, status = app.ui_classify({"path": str(scene)}, "forest, river\nairport", "EuroSAT")
    assert label == scores and status.startswith("Labels: 3 typed labels")
    _, status = app.ui_classify({"path": str(scene)}, "", "Land cover")
    assert status.startswith("Labels: preset Land cover (11 classes)")


def test_retrieval_ranks_as_the_embeddings_do(app, gallery):
    images = read_gallery(gallery)
    query = images[3].caption
    clip = app.clip()
    tokenizer = clip.processor.tokenizer
    chunker = TextChunker(tokenizer, text_limit(clip.model, tokenizer), mode="truncate")
    pixels = clip.processor(images=[rgb(image.path) for image in images], return_tensors="pt")["pixel_values"]
    scores = (text_embeddings(clip.model, chunker, [query]) @ image_embeddings(clip.model, pixels).T)[0]
    order = scores.argsort(descending=True).tolist()
    found = app.retrieve(query, 3)
    assert found == [(str(images[i].path), images[i].label()) for i in order[:3]]
    assert len(app.retrieve(query, 100)) == len(images)
    items, status = app.ui_retrieve(query, 2.0)
    assert items == found[:2] and status == f"The 2 best of {len(images)} gallery images."


# --- images as the models see them -------------------------------------------------------------------------------


def test_16_bit_png_is_stretched_not_clipped(app, tmp_path):
    path = tmp_path / "16bit.png"
    Image.fromarray(np.linspace(1000, 3000, 64 * 64).reshape(64, 64).astype(np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    assert np.asarray(rgb(path)).min() == 255  # what a plain convert("RGB") would feed the model
    pixels = np.asarray(app.image(str(path)))
    assert pixels.shape == (64, 64, 3) and pixels.min() == 0 and pixels.max() == 255
    assert 120 < pixels.mean() < 135  # a linear ramp stays a ramp
    assert app.ui_classify({"path": str(path)}, "", "Land cover")[1].startswith("Labels:")


def test_rgba_and_grayscale_images_work(app, tmp_path):
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.save(tmp_path / "rgba.png")
    Image.new("L", (32, 32), 77).save(tmp_path / "gray.png")
    image = app.image(str(tmp_path / "rgba.png"))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255) and image.getpixel((5, 5)) == (255, 0, 0)
    assert app.image(str(tmp_path / "gray.png")).getpixel((3, 3)) == (77, 77, 77)
    for name in ("rgba.png", "gray.png"):
        answer, status = app.ui_caption({"path": str(tmp_path / name)}, "Describe it.")
        assert not status.startswith(ERROR_PREFIX)


def test_oversized_images_are_refused_from_the_header(app, scene, tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_declaring(20000, 20000))
    with pytest.raises(Image.DecompressionBombError):  # PIL refuses it while opening, with its own message
        Image.open(huge)
    assert message(app.classify, str(huge), "", "EuroSAT") == f"image is over the limit of {DEMO_MAX_PIXELS:,} pixels"
    big = tmp_path / "big.png"
    big.write_bytes(png_declaring(6000, 6000))  # under PIL's limit, over the demo's
    assert message(app.caption, str(big), "x") == f"image is 6000x6000 px, over the limit of {DEMO_MAX_PIXELS:,} pixels"
    small_limit = DemoApp(app.settings, max_pixels=60_000)
    assert message(small_limit.image, str(scene)) == "image is 256x256 px, over the limit of 60,000 pixels"
    Image.new("L", (2000, 10)).save(tmp_path / "strip.png")
    assert "at most 50 times longer than wide" in message(app.image, str(tmp_path / "strip.png"))


def test_files_that_are_not_images_are_refused(app, scene, tmp_path):
    (tmp_path / "notes.png").write_text("not an image at all")
    (tmp_path / "cut.png").write_bytes(scene.read_bytes()[:200])
    assert message(app.image, str(tmp_path / "notes.png")) == "cannot decode the image: not in an image format PIL reads"
    assert message(app.image, str(tmp_path / "cut.png")).startswith("cannot decode the image:")
    assert str(tmp_path) not in message(app.image, str(tmp_path / "cut.png"))  # no server paths in the page
    label, status = app.ui_classify({"path": str(tmp_path / "notes.png")}, "", "Land cover")
    assert (label, status) == (None, ERROR_PREFIX + "cannot decode the image: not in an image format PIL reads")


# --- messages for empty or missing input -------------------------------------------------------------------------


def test_empty_inputs_get_messages(app, scene):
    assert message(app.caption, None, "Describe it.") == "upload an image first"
    assert message(app.caption, str(scene), "  \n") == f"type a prompt, e.g. {CAPTION_INSTRUCTION!r}"
    assert "keep it under 2000" in message(app.caption, str(scene), "x" * 2001)
    assert message(app.classify, str(scene), "forest", "EuroSAT") == (
        "type at least two labels, separated by commas or new lines (got only 'forest')"
    )
    assert message(app.classify, str(scene), "forest,\nFOREST", None).endswith("(got only 'forest')")
    for labels, preset in (("", None), (" , \n", "")):
        assert message(app.classify, str(scene), labels, preset) == (
            "type at least two labels, separated by commas or new lines, or pick a preset"
        )
    assert "unknown preset 'UCM'" in message(app.classify, str(scene), "", "UCM")
    assert message(app.retrieve, "   ", 3) == "type what to look for, e.g. 'a river crossing farmland'"
    assert app.ui_caption(None, "x") == ("", ERROR_PREFIX + "upload an image first")
    assert app.ui_retrieve("", 3) == ([], ERROR_PREFIX + "type what to look for, e.g. 'a river crossing farmland'")


def test_long_queries_and_labels_are_refused_before_any_text_is_encoded(app, scene, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a text that should have been refused was encoded")

    monkeypatch.setattr(space_app, "text_embeddings", never)
    monkeypatch.setattr(space_app, "zero_shot_classifier", never)
    query = "a river crossing farmland " * 40_000  # about 1 MB
    assert message(app.retrieve, query, 3) == (
        f"the query is {len(query.strip()):,} characters long; keep it under {MAX_QUERY_CHARS:,}"
    )
    assert app.ui_retrieve("x" * (MAX_QUERY_CHARS + 1), 3)[0] == []
    label = "forest " * (MAX_LABEL_CHARS // 7 + 1)
    assert message(app.classify, str(scene), f"river, {label}", None) == (
        f"a label is {len(label.strip()):,} characters long; keep each under {MAX_LABEL_CHARS:,}"
    )


def test_unexpected_errors_become_a_short_message(app, scene, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("CUDA exploded at /srv/secret/path")

    monkeypatch.setattr(app, "caption", broken)
    with caplog.at_level("ERROR", logger="earthvl.space.app"):
        answer, status = app.ui_caption({"path": str(scene)}, "Describe it.")
    assert (answer, status) == ("", ERROR_PREFIX + "captioning failed (RuntimeError); the server log has the details")
    assert "Traceback" in caplog.text and "CUDA exploded" in caplog.text


# --- settings -----------------------------------------------------------------------------------------------------


def test_settings_resolution_order(tmp_path):
    assert resolve_settings(None, {}) == DemoSettings("tiny-llava", "tiny-clip", None)
    assert resolve_settings(tmp_path, {}) == DemoSettings("tiny-llava", "tiny-clip", None)  # no folders in it
    for folder in ("models/vlm", "models/clip", "gallery"):
        (tmp_path / folder).mkdir(parents=True)
    space = DemoSettings(str(tmp_path / "models/vlm"), str(tmp_path / "models/clip"), str(tmp_path / "gallery"))
    assert resolve_settings(tmp_path, {}) == space
    assert resolve_settings(tmp_path, {"EARTHVL_VLM_MODEL": ""}) == space  # empty counts as unset
    environ = {"EARTHVL_VLM_MODEL": "org/vlm", "EARTHVL_CLIP_MODEL": "org/clip", "EARTHVL_GALLERY": "/g"}
    assert resolve_settings(tmp_path, environ) == DemoSettings("org/vlm", "org/clip", "/g")
    assert resolve_settings(tmp_path, environ, clip_model="mine", gallery="here") == DemoSettings("org/vlm", "mine", "here")
    assert resolve_settings(None, {"EARTHVL_CLIP_MODEL": "org/clip"}) == DemoSettings("tiny-llava", "org/clip", None)


def test_demo_command_options_override_the_environment(monkeypatch, gallery):
    from earthvl.scripts import demo

    monkeypatch.setenv("EARTHVL_VLM_MODEL", "org/vlm")
    monkeypatch.setenv("EARTHVL_GALLERY", "/nowhere")
    launched = {}
    monkeypatch.setattr(demo.DemoApp, "load", lambda self: None)
    monkeypatch.setattr(demo, "launch", lambda app, **options: launched.update(app=app, **options))
    (args,) = demo.make_parser().parse_args_and_config(["--gallery", str(gallery), "--port", "7999", "--max_pixels", "1000"])
    assert demo.main(args) == 0
    assert launched["app"].settings == DemoSettings("org/vlm", "tiny-clip", str(gallery))
    assert launched["app"].max_pixels == 1000
    assert (launched["host"], launched["port"], launched["share"]) == (None, 7999, False)
    with pytest.raises(ValueError, match="max_pixels must be positive"):
        demo.make_parser().parse_args_and_config(["--max_pixels", "0"])


def test_missing_gradio_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)
    assert message(require_gradio) == 'the demo needs Gradio: pip install "earthvl[demo]"'


# --- galleries ----------------------------------------------------------------------------------------------------


def test_gallery_round_trip(sample_gaia, gallery):
    rows = load_split(str(sample_gaia), "default", "train")
    manifest = json.loads((gallery / GALLERY_FILE).read_text())
    assert {k: manifest[k] for k in ("format", "source", "config", "split", "skipped")} == {
        "format": "earthvl-gallery/1", "source": str(sample_gaia), "config": "default", "split": "train", "skipped": []
    }
    images = read_gallery(gallery)
    assert [image.path.name for image in images] == [f"{i:04d}.jpg" for i in range(8)]
    assert [image.caption for image in images] == [row["captions"][0] for row in rows.select(range(8))]
    assert [image.id for image in images] == [str(row["id"]) for row in rows.select(range(8))]
    assert [image.credits for image in images] == [row["credits"] or None for row in rows.select(range(8))]
    assert images[0].label() == f"{images[0].caption} (credit: {images[0].credits})"
    for image in images:
        with Image.open(image.path) as thumbnail:
            assert thumbnail.format == "JPEG" and max(thumbnail.size) == 64


def test_gallery_skips_bad_images_and_no_data_patches(sample_gaia, sample_world, tmp_path):
    broken = tmp_path / "gaia"
    shutil.copytree(sample_gaia, broken)
    (parquet,) = (broken / "data" / "default").glob("test-*.parquet")
    table = pq.read_table(parquet).to_pylist()
    table[1]["image"] = {"bytes": b"not an image", "path": "1.png"}
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(parquet)), parquet)
    made = make_gallery(broken, tmp_path / "g", config="default", count=3)
    manifest = json.loads((made / GALLERY_FILE).read_text())
    assert [image["id"] for image in manifest["images"]] == [str(table[i]["id"]) for i in (0, 2, 3)]
    assert [(s["row"], s["id"]) for s in manifest["skipped"]] == [(1, str(table[1]["id"]))]
    assert manifest["skipped"][0]["reason"].startswith("cannot decode the image")

    build_chatearthnet(sample_world.chatearthnet.root, tmp_path / "cen", configs="gpt35", progress=False, num_proc=1)
    rows = load_split(str(tmp_path / "cen"), "gpt35", "test")
    made = make_gallery(tmp_path / "cen", tmp_path / "cen-gallery", config="gpt35", count=4)
    manifest = json.loads((made / GALLERY_FILE).read_text())
    kept = [i for i, row in enumerate(rows) if not row["is_nodata"]][:4]
    skipped = [i for i, row in enumerate(rows) if row["is_nodata"] and i < kept[-1]]
    assert skipped and [(s["row"], s["reason"]) for s in manifest["skipped"]] == [(i, "no-data patch") for i in skipped]
    assert [(i["id"], i["caption"]) for i in manifest["images"]] == [(rows[i]["file_name"], rows[i]["caption"]) for i in kept]


def test_gallery_errors_name_the_file(gallery, tmp_path):
    assert f"{tmp_path / GALLERY_FILE} is missing" in message(read_gallery, tmp_path)
    (tmp_path / GALLERY_FILE).write_text("{not json")
    assert message(read_gallery, tmp_path).startswith(f"{tmp_path / GALLERY_FILE} is not a valid gallery file")
    (tmp_path / GALLERY_FILE).write_text(json.dumps({"format": "other/2", "images": []}))
    assert "expected 'earthvl-gallery/1'" in message(read_gallery, tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(gallery, copy)
    (copy / "0005.jpg").unlink()
    assert f"missing, e.g. {copy / '0005.jpg'}" in message(read_gallery, copy)
    (tmp_path / "foreign" / "notes.txt").parent.mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("keep me")
    assert "is not a gallery folder" in message(make_gallery, "unused", tmp_path / "foreign")  # never wiped


def test_sample_gallery_builds_offline_once(monkeypatch, tmp_path):
    monkeypatch.setenv("EARTHVL_CACHE", str(tmp_path))
    folder = sample_gallery()
    assert folder.is_relative_to(tmp_path) and len(read_gallery(folder)) == 26
    stamp = (folder / GALLERY_FILE).stat().st_mtime_ns
    assert sample_gallery() == folder and (folder / GALLERY_FILE).stat().st_mtime_ns == stamp


def test_empty_gallery_is_reported(tmp_path):
    (tmp_path / GALLERY_FILE).write_text(json.dumps({"format": "earthvl-gallery/1", "images": []}))
    empty = DemoApp(DemoSettings("tiny-llava", "tiny-clip", str(tmp_path)))
    assert empty.ui_retrieve("river", 3) == ([], f"{ERROR_PREFIX}the gallery {tmp_path} has no images")


# --- the page -----------------------------------------------------------------------------------------------------


def test_page_has_the_stable_element_ids(gallery):
    demo = build_demo(gallery=str(gallery))
    components = {c["props"].get("elem_id"): c for c in demo.config["components"] if c["props"].get("elem_id")}
    assert {elem_id for tab in ELEM_IDS.values() for elem_id in tab.values()} <= set(components)
    assert [components[ELEM_IDS[tab]["tab"]]["props"]["label"] for tab in ELEM_IDS] == ["Caption", "Classify", "Retrieve"]
    assert [components[ELEM_IDS[tab]["button"]]["props"]["value"] for tab in ELEM_IDS] == ["Describe", "Classify", "Search"]
    assert components["caption-prompt"]["props"]["value"] == CAPTION_INSTRUCTION
    assert [choice for choice, _ in components["classify-preset"]["props"]["choices"]] == ["EuroSAT", "RESISC45", "Land cover"]
    assert (components["classify-output"]["type"], components["retrieve-gallery"]["type"]) == ("label", "gallery")
    assert components["caption-image"]["type"] == "image" and not demo.config["analytics_enabled"]
    # uploads reach the handlers unopened, so the pixel limit is checked before anything decodes them
    assert demo.fns and not any(fn.preprocess for fn in demo.fns.values())


def test_serve_space_resolves_relative_to_the_app_file(monkeypatch, tmp_path):
    (tmp_path / "models" / "clip").mkdir(parents=True)
    for name in ("EARTHVL_VLM_MODEL", "EARTHVL_CLIP_MODEL", "EARTHVL_GALLERY"):
        monkeypatch.delenv(name, raising=False)
    launched = []
    monkeypatch.setattr(DemoApp, "load", lambda self: None)
    monkeypatch.setattr(space_app, "launch", launched.append)
    space_app.serve_space(str(tmp_path / "app.py"))
    assert launched[0].settings == DemoSettings("tiny-llava", str(tmp_path / "models" / "clip"), None)
    assert torch.device(launched[0].device).type in ("cpu", "cuda")


def test_the_page_shows_space_folders_relative_to_the_app_not_the_servers_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a Space runs app.py from its repository folder
    assert shown(str(tmp_path / "models" / "vlm")) == "models/vlm"
    assert shown("my-org/clip-rs") == "my-org/clip-rs" and shown("tiny-clip") == "tiny-clip"
    assert shown("/data/elsewhere/clip") == "/data/elsewhere/clip"
