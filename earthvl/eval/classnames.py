"""Prompt class names and templates of the known classification benchmarks, and the mapping from a dataset's own label
names to them.

EuroSAT and RESISC45 follow LAION's CLIP_benchmark so that numbers compare with the literature (repository
LAION-AI/CLIP_benchmark, commit 48de38c1, files clip_benchmark/datasets/en_classnames.json and
en_zeroshot_classification_templates.json; MIT License, Copyright (c) 2022 Mehdi Cherti): EuroSAT its curated names
and three "centered satellite photo" templates; RESISC45 the TFDS label names as they are (snake_case: CLIP_benchmark
reads them from TFDS without replacing the underscores) and its four remote-sensing templates, typos included.
ImageNet-1k uses OpenAI CLIP's curated 1000 names and 80 templates (openai/CLIP, MIT License, Copyright (c) 2021
OpenAI), as CLIP_benchmark ships them; they live in `data/imagenet1k.json`.

UCMerced and AID have no CLIP_benchmark entry. Their prompt names are the class folder names of the original archives
written as words ("baseballdiamond" -> "baseball diamond", "DenseResidential" -> "dense residential"), as in the AID
paper's list of scene types; their templates, and those of any dataset without its own, are the RESISC45 ones.

A dataset's label names are matched by a normalised key (lowercase, no spaces, underscores or hyphens), never by
position, so "AnnualCrop", "Annual Crop" and "annual_crop" all resolve, in whatever order the dataset has them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Iterable

from earthvl.errors import EarthvlError

REMOTE_SENSING_TEMPLATES = (
    "a sattelite image of {c}",
    "an aerial view of {c}",
    "a sattelite photo of {c}",
    "{c} from above",
)
"""CLIP_benchmark's RESISC45 templates (spelling as upstream): the default for remote-sensing scenes."""
EUROSAT_TEMPLATES = (
    "a centered satellite photo of {c}.",
    "a centered satellite photo of a {c}.",
    "a centered satellite photo of the {c}.",
)


@dataclass(frozen=True)
class ClassNames:
    """The prompt names of one benchmark and the label spellings they are found under."""

    labels: tuple[str, ...]
    """Canonical label names, in the benchmark's usual order (documentation; matching never relies on it)."""
    prompts: tuple[str, ...]
    """Prompt name of each canonical label."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Other label spellings seen on the Hub -> the canonical label."""
    anchors: tuple[int, ...] = ()
    """Label names too varied to match one by one (ImageNet's WordNet synonym lists) are taken by position when there
    are exactly as many as `prompts` and the dataset's label at each anchor index contains the prompt name there."""

    def lookup(self) -> dict[str, str]:
        """Normalised label key -> prompt name, for canonical labels, aliases and the prompt names themselves."""
        prompt_of = dict(zip(self.labels, self.prompts))
        keys = {label_key(prompt): prompt for prompt in self.prompts}
        keys.update({label_key(label): prompt for label, prompt in prompt_of.items()})
        keys.update({label_key(alias): prompt_of[label] for alias, label in self.aliases.items()})
        return keys


def label_key(name: str) -> str:
    """The matching key of a label name: lowercase without spaces, underscores or hyphens."""
    return re.sub(r"[\s_-]+", "", name).lower()


def readable(name: str) -> str:
    """A label name as prompt words: underscores and hyphens as spaces, CamelCase split, capitalised words lowercased
    (acronyms kept): "HerbaceousVegetation" -> "herbaceous vegetation", "tree_cover" -> "tree cover"."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name.replace("_", " ").replace("-", " ")).split()
    return " ".join(word.lower() if word[1:].islower() or len(word) == 1 else word for word in words)


def prompt_names(benchmark: str, label_names: list[str]) -> list[str]:
    """The prompt name of each of a dataset's label names, in its order, for a known benchmark; an error naming the
    labels that match none of its classes."""
    table = CLASS_NAMES[benchmark]
    keys = table.lookup()
    if all(label_key(name) in keys for name in label_names):
        return [keys[label_key(name)] for name in label_names]
    if _anchored(table, label_names):
        return list(table.prompts)
    unmapped = [name for name in label_names if label_key(name) not in keys]
    raise EarthvlError(
        f"{len(unmapped)} label name(s) of this dataset match no {benchmark} class: {_listed(map(repr, unmapped))}. "
        f"Known {benchmark} labels: {_listed(table.labels)}. "
        "Pass class_names (one prompt name per label, in label order) to use the dataset anyway"
    )


def _listed(names: Iterable[str], most: int = 20) -> str:
    names = list(names)
    return ", ".join(names[:most]) + (f" ... ({len(names)} in all)" if len(names) > most else "")


def _anchored(table: ClassNames, label_names: list[str]) -> bool:
    return (
        bool(table.anchors)
        and len(label_names) == len(table.prompts)
        and all(label_key(table.prompts[i]) in label_key(label_names[i]) for i in table.anchors)
    )


def _table(labels: str, prompts: str | None = None) -> ClassNames:
    """Labels separated by spaces, prompt names by ", " (the labels themselves when not given)."""
    names = tuple(labels.split())
    return ClassNames(names, tuple(prompts.split(", ")) if prompts else names)


def _imagenet() -> tuple[ClassNames, tuple[str, ...]]:
    data = json.loads(resources.files("earthvl.eval").joinpath("data/imagenet1k.json").read_text(encoding="utf-8"))
    names = tuple(data["class_names"])
    # tench, goldfish, cliff dwelling, toilet paper: found inside the Hub's "tench, Tinca tinca"-style labels
    return ClassNames(names, names, anchors=(0, 1, 500, 999)), tuple(data["templates"])


IMAGENET, IMAGENET_TEMPLATES = _imagenet()

EUROSAT = ClassNames(
    labels=(
        "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
        "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
    ),
    prompts=(
        "annual crop land", "forest", "brushland or shrubland", "highway or road",
        "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
        "residential buildings or homes or apartments", "river", "lake or sea",
    ),
    aliases={"Industrial Buildings": "Industrial", "Residential Buildings": "Residential"},  # blanchon/EuroSAT_RGB
)
RESISC45 = _table(
    "airplane airport baseball_diamond basketball_court beach bridge chaparral church circular_farmland cloud "
    "commercial_area dense_residential desert forest freeway golf_course ground_track_field harbor industrial_area "
    "intersection island lake meadow medium_residential mobile_home_park mountain overpass palace parking_lot railway "
    "railway_station rectangular_farmland river roundabout runway sea_ice ship snowberg sparse_residential stadium "
    "storage_tank tennis_court terrace thermal_power_station wetland"
)
UCMERCED = _table(
    "agricultural airplane baseballdiamond beach buildings chaparral denseresidential forest freeway golfcourse "
    "harbor intersection mediumresidential mobilehomepark overpass parkinglot river runway sparseresidential "
    "storagetanks tenniscourt",
    "agricultural, airplane, baseball diamond, beach, buildings, chaparral, dense residential, forest, freeway, "
    "golf course, harbor, intersection, medium residential, mobile home park, overpass, parking lot, river, runway, "
    "sparse residential, storage tanks, tennis court",
)
AID = _table(
    "Airport BareLand BaseballField Beach Bridge Center Church Commercial DenseResidential Desert Farmland Forest "
    "Industrial Meadow MediumResidential Mountain Park Parking Playground Pond Port RailwayStation Resort River "
    "School SparseResidential Square Stadium StorageTanks Viaduct",
    "airport, bare land, baseball field, beach, bridge, center, church, commercial, dense residential, desert, "
    "farmland, forest, industrial, meadow, medium residential, mountain, park, parking, playground, pond, port, "
    "railway station, resort, river, school, sparse residential, square, stadium, storage tanks, viaduct",
)

CLASS_NAMES: dict[str, ClassNames] = {
    "eurosat": EUROSAT,
    "resisc45": RESISC45,
    "ucmerced": UCMERCED,
    "aid": AID,
    "imagenet1k": IMAGENET,
}
