"""The benchmark registry of `earthvl eval`: prompt names and templates, resolving datasets, loading one split."""

import hashlib
import io
import json

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage

from earthvl.builders.chatearthnet.generation import class_shares
from earthvl.builders.chatearthnet.landcover import LAND_COVER_CLASSES
from earthvl.errors import EarthvlError
from earthvl.eval import benchmarks
from earthvl.eval.benchmarks import KNOWN, load_benchmark, resolve
from earthvl.eval.classnames import CLASS_NAMES, REMOTE_SENSING_TEMPLATES, label_key, prompt_names, readable
from earthvl.sample import MANIFEST, generate_sample

EUROSAT_PROMPTS = [
    "annual crop land",
    "forest",
    "brushland or shrubland",
    "highway or road",
    "industrial buildings or commercial buildings",
    "pasture land",
    "permanent crop land",
    "residential buildings or homes or apartments",
    "river",
    "lake or sea",
]
EUROSAT_SPELLINGS = {
    "timm/eurosat-rgb": [
        "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
        "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
    ],
    "blanchon/EuroSAT_RGB": [
        "Annual Crop", "Forest", "Herbaceous Vegetation", "Highway", "Industrial Buildings",
        "Pasture", "Permanent Crop", "Residential Buildings", "River", "SeaLake",
    ],
    "snake_case": [
        "annual_crop", "forest", "herbaceous_vegetation", "highway", "industrial",
        "pasture", "permanent-crop", "residential", "river", "sea_lake",
    ],
}


@pytest.mark.parametrize("source", EUROSAT_SPELLINGS)
def test_eurosat_label_spellings_map_to_the_clip_benchmark_names(source):
    names = EUROSAT_SPELLINGS[source]
    assert prompt_names("eurosat", names) == EUROSAT_PROMPTS
    order = [3, 9, 0, 7, 1, 8, 2, 6, 4, 5]
    assert prompt_names("eurosat", [names[i] for i in order]) == [EUROSAT_PROMPTS[i] for i in order]
    assert prompt_names("eurosat", EUROSAT_PROMPTS) == EUROSAT_PROMPTS  # a dataset already using the prompt names


def test_unmapped_label_names_are_an_error_naming_them():
    with pytest.raises(EarthvlError, match="2 label name\\(s\\) .* match no eurosat class: 'Glacier', 'Annual-Crops'"):
        prompt_names("eurosat", ["Forest", "Glacier", "Annual-Crops"])


def test_templates_are_exact():
    assert KNOWN["eurosat"].templates == (
        "a centered satellite photo of {c}.",
        "a centered satellite photo of a {c}.",
        "a centered satellite photo of the {c}.",
    )
    assert REMOTE_SENSING_TEMPLATES == (
        "a sattelite image of {c}", "an aerial view of {c}", "a sattelite photo of {c}", "{c} from above"
    )
    for name in ("resisc45", "ucmerced", "aid"):
        assert KNOWN[name].templates == REMOTE_SENSING_TEMPLATES


def test_resisc45_ucmerced_and_aid_names():
    resisc = CLASS_NAMES["resisc45"].prompts
    assert len(resisc) == 45 and resisc[:3] == ("airplane", "airport", "baseball_diamond") and resisc[-1] == "wetland"
    assert prompt_names("resisc45", ["baseball diamond", "Sea Ice"]) == ["baseball_diamond", "sea_ice"]
    ucm = ["agricultural", "baseballdiamond", "denseresidential", "mobilehomepark", "storagetanks", "tenniscourt"]
    assert prompt_names("ucmerced", ucm) == [
        "agricultural", "baseball diamond", "dense residential", "mobile home park", "storage tanks", "tennis court"
    ]
    assert len(CLASS_NAMES["ucmerced"].prompts) == 21 and len(CLASS_NAMES["aid"].prompts) == 30
    assert prompt_names("aid", ["Airport", "BareLand", "DenseResidential", "RailwayStation", "Viaduct"]) == [
        "airport", "bare land", "dense residential", "railway station", "viaduct"
    ]


def test_no_label_key_of_a_benchmark_points_at_two_prompt_names():
    for table in CLASS_NAMES.values():
        assert len(table.labels) == len(table.prompts)
        seen = {}
        for label, prompt in [*zip(table.labels, table.prompts), *((p, p) for p in table.prompts)]:
            assert seen.setdefault(label_key(label), prompt) == prompt, (label, prompt)


def test_imagenet_uses_openai_names_and_templates():
    table = CLASS_NAMES["imagenet1k"]
    assert len(table.prompts) == 1000 and len(KNOWN["imagenet1k"].templates) == 80
    assert table.prompts[:3] == ("tench", "goldfish", "great white shark") and table.prompts[-1] == "toilet paper"
    assert (table.prompts[7], table.prompts[134], table.prompts[517]) == ("rooster", "crane bird", "construction crane")
    assert KNOWN["imagenet1k"].templates[0] == "a bad photo of a {c}."
    assert KNOWN["imagenet1k"].templates[-1] == "a tattoo of the {c}."
    assert KNOWN["imagenet1k"].split == "validation"


def test_imagenet_synonym_labels_are_taken_in_order_only_when_the_anchors_agree():
    hub = [f"{name}, synonym {i}" for i, name in enumerate(CLASS_NAMES["imagenet1k"].prompts)]
    hub[0], hub[-1] = "tench, Tinca tinca", "toilet tissue, toilet paper, bathroom tissue"
    assert prompt_names("imagenet1k", hub) == list(CLASS_NAMES["imagenet1k"].prompts)
    with pytest.raises(EarthvlError, match="match no imagenet1k class"):
        prompt_names("imagenet1k", sorted(hub))


def test_readable_prompt_names():
    assert [readable(n) for n in ("HerbaceousVegetation", "tree_cover", "SeaLake", "USA_cities", "bare-land")] == [
        "herbaceous vegetation", "tree cover", "sea lake", "USA cities", "bare land"
    ]


def test_short_names_hub_ids_and_mirrors_resolve():
    assert resolve("EuroSAT") == ("eurosat", KNOWN["eurosat"], "timm/eurosat-rgb")
    assert resolve("timm/eurosat-rgb") == ("eurosat", KNOWN["eurosat"], "timm/eurosat-rgb")
    assert resolve("eurosat:me/eurosat-mirror") == ("eurosat", KNOWN["eurosat"], "me/eurosat-mirror")
    assert resolve("me/other") == (None, None, "me/other")
    assert {name: (s.hub_id, s.config, s.split) for name, s in KNOWN.items() if s.caption_column} == {
        "gaia": ("earthvl/gaia", "default", "test"),
        "chatearthnet": ("earthvl/chatearthnet", "gpt35", "test"),
    }


# ------------------------------------------------------------------------------------------------ loading splits


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def image(value: int) -> dict:
    return {"bytes": png(value), "path": None}


def write_hub_folder(folder, splits: dict[str, dict], features: Features) -> str:
    """A script-free Hub-style folder: one Parquet file per split and a card listing them."""
    for split, columns in splits.items():
        Dataset.from_dict(columns, features=features).to_parquet(str(folder / "data" / f"{split}-00000.parquet"))
    files = "".join(f"  - split: {split}\n    path: data/{split}-*.parquet\n" for split in splits)
    (folder / "README.md").write_text(f"---\nconfigs:\n- config_name: default\n  data_files:\n{files}---\n")
    return str(folder)


# EuroSAT labels in an order of their own, as a mirror might have them
MIRROR_LABELS = ["SeaLake", "River", "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                 "PermanentCrop", "Residential"]


@pytest.fixture(scope="module")
def eurosat_folder(tmp_path_factory):
    features = Features({"image": Image(), "label": ClassLabel(names=MIRROR_LABELS), "image_id": Value("string")})
    splits = {"train": [0, 1], "test": [2, 0, 9, 2, 1]}
    columns = {
        split: {"image": [image(i) for i in range(len(labels))], "label": labels, "image_id": [str(i) for i in labels]}
        for split, labels in splits.items()
    }
    return write_hub_folder(tmp_path_factory.mktemp("eurosat"), columns, features)


def test_a_known_benchmark_from_a_mirror_maps_labels_by_name(eurosat_folder):
    bench = load_benchmark(f"eurosat:{eurosat_folder}", "classify")
    assert (bench.name, bench.source, bench.split, bench.revision) == ("eurosat", eurosat_folder, "test", None)
    assert bench.label_names == MIRROR_LABELS
    assert bench.class_names == ["lake or sea", "river", "annual crop land", "forest", "brushland or shrubland",
                                 "highway or road", "industrial buildings or commercial buildings", "pasture land",
                                 "permanent crop land", "residential buildings or homes or apartments"]
    assert bench.templates == KNOWN["eurosat"].templates
    assert bench.labels() == [2, 0, 9, 2, 1] and bench.skipped == {}
    assert bench.rows.features["image"] == Image(decode=False) and bench.rows[0]["image"]["bytes"] == png(0)


def test_an_unknown_dataset_gets_readable_names_and_the_default_templates(eurosat_folder):
    bench = load_benchmark(eurosat_folder, "classify", max_samples=3)
    assert bench.name is None and bench.split == "test" and bench.label_column == "label"
    assert bench.class_names[:3] == ["sea lake", "river", "annual crop"] and bench.templates == REMOTE_SENSING_TEMPLATES
    assert bench.labels() == [2, 0, 9] and bench.skipped == {"max_samples": 2}


def test_explicit_arguments_override_the_spec(eurosat_folder):
    names = [f"class {i}" for i in range(10)]
    bench = load_benchmark(
        f"eurosat:{eurosat_folder}", "classify", split="train", image_column="image", label_column="label",
        class_names=names, templates=["a photo of {c}"],
    )
    assert (bench.split, bench.class_names, bench.templates) == ("train", names, ("a photo of {c}",))
    assert bench.labels() == [0, 1]


def test_a_known_hub_id_uses_its_spec(eurosat_folder, monkeypatch):
    calls = []
    real = benchmarks.load_split

    def fake_load_split(source, config, split, revision=None):
        calls.append((source, config, split, revision))
        return real(eurosat_folder, None, split)

    monkeypatch.setattr(benchmarks, "load_split", fake_load_split)
    bench = load_benchmark("timm/resisc45", "classify", class_names=[f"c{i}" for i in range(10)])
    assert calls == [("timm/resisc45", None, "test", KNOWN["resisc45"].revision)] and bench.name == "resisc45"
    assert bench.templates == REMOTE_SENSING_TEMPLATES
    with pytest.raises(EarthvlError, match="match no resisc45 class: 'SeaLake', 'AnnualCrop', 'HerbaceousVegetation'"):
        load_benchmark("resisc45", "classify")


def test_string_and_integer_label_columns(tmp_path):
    features = Features({"image": Image(), "label": Value("string"), "class": Value("int64")})
    rows = {
        "image": [image(i) for i in range(4)],
        "label": ["Wetland", "bare_land", None, "Wetland"],
        "class": [1, 0, 3, -1],
    }
    folder = write_hub_folder(tmp_path, {"validation": rows}, features)
    bench = load_benchmark(folder, "classify")  # the only split
    assert bench.label_names == ["Wetland", "bare_land"] and bench.class_names == ["wetland", "bare land"]
    assert bench.labels() == [0, 1, 0] and bench.skipped == {"unlabelled": 1}
    with pytest.raises(EarthvlError, match="holds bare integers: pass class_names"):
        load_benchmark(folder, "classify", label_column="class")
    with pytest.raises(EarthvlError, match="2 class names given, but .* has label 3"):
        load_benchmark(folder, "classify", label_column="class", class_names=["a", "b"])
    bench = load_benchmark(folder, "classify", label_column="class", class_names=["a", "b", "c", "d"])
    assert bench.label_names is None and bench.labels() == [1, 0, 3] and bench.skipped == {"unlabelled": 1}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "segment"}, "unknown task 'segment'; choose one of classify, caption, retrieve"),
        ({"task": "caption"}, r"no caption column found \(pass caption_column to name one\) in .* \(split 'test'\); "
                              r"its columns are: image \(Image\), label \(ClassLabel\), image_id \(string\)"),
        ({"label_column": "nope"}, "no label column 'nope' in .*; its columns are: image"),
        ({"image_column": "label"}, "column 'label' holds neither images nor image paths"),
        ({"task": "caption", "caption_column": "label"}, "caption column 'label' is neither a string nor a list"),
        ({"split": "validation"}, "has no split 'validation'; it has train, test"),
        ({"class_names": ["a"]}, "1 class names given for the 10 labels"),
        ({"templates": ["{c}", "no placeholder"]}, r"lacking it: \['no placeholder'\]"),
        ({"revision": "main"}, "applies to Hub datasets only"),
        ({"max_samples": 0}, "max_samples must be a positive number"),
    ],
)
def test_clear_errors(eurosat_folder, kwargs, message):
    kwargs = {"task": "classify", **kwargs}
    with pytest.raises(EarthvlError, match=message):
        load_benchmark(eurosat_folder, **kwargs)


# ----------------------------------------------------------------------------- earthvl builds and the sample world


@pytest.fixture(scope="module")
def built(sample_world, tmp_path_factory):
    from earthvl.builders.chatearthnet.build import build_chatearthnet
    from earthvl.builders.gaia.build import build_gaia

    root = tmp_path_factory.mktemp("built")
    build_chatearthnet(sample_world.chatearthnet.root, root / "cen", configs="gpt35", progress=False, num_proc=1)
    build_gaia(sample_world.gaia.root, root / "gaia", configs="default", progress=False)
    return root


def test_chatearthnet_build_leaves_out_and_counts_nodata_patches(sample_world, built):
    test = [p for p in sample_world.chatearthnet.patches if p.split == "test"]
    nodata = sum(p.nodata is not None for p in test)
    assert nodata > 0
    for dataset in (str(built / "cen"), f"chatearthnet:{built / 'cen'}"):
        bench = load_benchmark(dataset, "retrieve")
        assert bench.skipped == {"nodata": nodata} and len(bench.rows) == len(test) - nodata
        assert not any(bench.rows["is_nodata"]) and bench.caption_column == "caption"
        references = bench.references(0)
        assert len(references) == 1 and references[0] == bench.rows[0]["caption"]
    assert (bench.name, bench.config) == ("chatearthnet", "gpt35")


def test_gaia_build_has_five_references_per_image(built):
    bench = load_benchmark(str(built / "gaia"), "caption", max_samples=2)
    assert bench.caption_column == "captions" and len(bench.rows) == 2 and bench.skipped["max_samples"] > 0
    assert [len(bench.references(i)) for i in range(2)] == [5, 5]
    assert all(text.startswith("The image showcases:") for text in bench.references(1))


def test_scenes_folder_is_a_classification_benchmark(sample_world):
    manifest = json.loads((sample_world.root / MANIFEST).read_text())["scenes"]
    bench = load_benchmark(str(sample_world.scenes), "classify")
    assert bench.label_names == sorted(manifest) and bench.split == "train"
    assert bench.class_names == [name.replace("_", " ") for name in bench.label_names]
    assert bench.templates == REMOTE_SENSING_TEMPLATES
    labels = bench.labels()
    assert {name: labels.count(i) for i, name in enumerate(bench.label_names)} == manifest
    with_data = {p.file_name: p for p in sample_world.chatearthnet.patches if p.split == "test" and p.nodata is None}
    assert sum(manifest.values()) == len(with_data)
    for row, label in zip(bench.rows, labels):
        patch = with_data[row["image"]["path"].rsplit("/", 1)[-1]]
        dominant = LAND_COVER_CLASSES[class_shares(patch.label_map, top=1)[0][0]].name
        assert bench.class_names[label] == dominant


def digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_scenes_are_deterministic_and_owned_by_the_world(tmp_path):
    a = generate_sample(tmp_path / "a", tiles=8, seed=1, gaia_images=3, progress=False)
    b = generate_sample(tmp_path / "b", tiles=8, seed=1, gaia_images=3, progress=False)
    assert digest(a.scenes) == digest(b.scenes) and len(digest(a.scenes)) > 0
    stale = tmp_path / "c" / "scenes" / "old_class" / "old.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    with pytest.raises(EarthvlError, match="already holds a sample world \\(scenes\\)"):
        generate_sample(tmp_path / "c", tiles=3, seed=2, gaia_images=3, progress=False)
    c = generate_sample(tmp_path / "c", tiles=3, seed=2, gaia_images=3, progress=False, overwrite=True)
    assert not stale.parent.exists() and not set(digest(c.scenes)) & set(digest(b.scenes))
    assert json.loads((c.root / MANIFEST).read_text())["scenes"] == {
        name: len(list((c.scenes / name).iterdir())) for name in sorted(p.name for p in c.scenes.iterdir())
    }
