"""Faithfulness of captions to land-cover maps: what a caption claims about the ground against what the map shows.

A caption is read into claims: the land-cover classes it names (with the synonyms captions use: "urban", "built-up",
"forest", "cropland", ...), in order; the region each named class is placed in (the region phrase nearest to it in
its sentence: top left, top right, bottom left, bottom right, middle/centre); and size words ("a small portion of
water"), checked against the class's share of that region, or of the whole map when the phrase is "of the
scene/image". The map's truth is ChatEarthNet's generator statistics (`builders.chatearthnet.generation`): classes
with >= 20 pixels, background left out; a region's top three classes; size words as the prompts give them (either
the rounded upstream reading or the exact one).

Per caption and per dataset: precision of the classes named against the classes present (>= 20 pixels), recall
against the classes the generator's rules ask a caption to describe (the dominant class and each region's top three),
whether the dominant class is named first, region agreement, size-word agreement, banned words, and the classes invented.

Its results file is `{"summary": {...}, "captions": {name: score}}` (`write_faithfulness`, `read_faithfulness`), not
the `earthvl eval` results format (`earthvl.eval_results`): scoring a dataset's own captions involves no model, which
that format requires, and as a `caption` protocol it would clash in a model card with the model's n-gram caption
result on the same split (a card holds one result per task and split).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from earthvl.builders.chatearthnet.generation import (
    BANNED_WORDS,
    REGIONS,
    SIZE_BUCKETS,
    caption_statistics,
    class_shares,
    region_slices,
    size_words,
)
from earthvl.atomic import write_bytes
from earthvl.builders.chatearthnet.landcover import LAND_COVER_CLASSES
from earthvl.errors import EarthvlError

SYNONYMS: dict[str, tuple[str, ...]] = {
    "water": ("water", "waters", "water body", "water bodies", "waterbody", "river", "rivers", "lake", "lakes",
              "reservoir", "reservoirs", "pond", "ponds", "sea", "ocean", "stream", "streams"),
    "developed": ("developed area", "developed areas", "developed land", "developed", "urban", "urban area",
                  "built-up", "built up", "buildings", "settlement", "settlements", "city", "town"),
    "tree": ("tree", "trees", "tree cover", "forest", "forests", "woodland", "woodlands", "woods"),
    "shrub": ("shrub", "shrubs", "shrubland", "shrublands", "bushes", "scrub", "scrubland"),
    "grass": ("grass", "grasses", "grassland", "grasslands", "meadow", "meadows", "pasture", "pastures"),
    "crop": ("crop", "crops", "cropland", "croplands", "crop land", "farmland", "farmlands", "agricultural land",
             "agricultural", "agriculture"),
    "bare": ("bare land", "bare ground", "bare soil", "bare", "barren"),
    "snow": ("snow", "ice", "glacier", "glaciers"),
    "wetland": ("wetland", "wetlands", "marsh", "marshes", "swamp", "swamps", "bog", "bogs"),
    "mangroves": ("mangrove", "mangroves"),
    "moss": ("moss", "mosses", "lichen", "lichens"),
}
"""Class key -> the phrases that name it in captions (matched as whole words, case-insensitive)."""
REGION_PHRASES: dict[str, tuple[str, ...]] = {
    "top left": ("top left", "top-left", "upper left", "upper-left", "northwest", "north-west"),
    "top right": ("top right", "top-right", "upper right", "upper-right", "northeast", "north-east"),
    "bottom left": ("bottom left", "bottom-left", "lower left", "lower-left", "southwest", "south-west"),
    "bottom right": ("bottom right", "bottom-right", "lower right", "lower-right", "southeast", "south-east"),
    "middle": ("middle", "center", "centre", "central"),
}
SIZE_PHRASES = tuple(word for _, word in sorted(SIZE_BUCKETS, key=lambda b: -len(b[1])))
"""Size words, longest first so that "extra small" wins over "small"."""
SIZE_NOUN = r"(?:fraction|part|portion|amount|quantity|share|proportion|section|area)"
WHOLE_MAP = re.compile(r"\s+of\s+the\s+(?:scene|image|area|picture|whole)\b")

_KEY_INDEX = {c.key: c.index for c in LAND_COVER_CLASSES}


def _alternation(phrases: Iterable[str]) -> str:
    return "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))


_CLASS_RE = re.compile(r"\b(" + _alternation(p for ps in SYNONYMS.values() for p in ps) + r")\b", re.I)
_PHRASE_CLASS = {p: _KEY_INDEX[key] for key, ps in SYNONYMS.items() for p in ps}
_REGION_RE = re.compile(r"\b(" + _alternation(p for ps in REGION_PHRASES.values() for p in ps) + r")\b", re.I)
_PHRASE_REGION = {p: region for region, ps in REGION_PHRASES.items() for p in ps}
_SIZE_RE = re.compile(r"\b(" + _alternation(SIZE_PHRASES) + r")\s+" + SIZE_NOUN + r"s?\b", re.I)
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_BANNED_RE = re.compile(r"\b(" + "|".join(BANNED_WORDS) + r")\w*", re.I)


@dataclass(frozen=True)
class Mention:
    cls: int
    start: int
    end: int


@dataclass
class Claims:
    """What one caption says: classes in order of first mention, (class, region) and (class, region or None for the
    whole map, size word) claims, banned words."""

    classes: list[int] = field(default_factory=list)
    regions: list[tuple[int, str]] = field(default_factory=list)
    sizes: list[tuple[int, str | None, str]] = field(default_factory=list)
    banned: list[str] = field(default_factory=list)


def _mentions(sentence: str) -> list[Mention]:
    return [Mention(_PHRASE_CLASS[m[1].lower()], m.start(), m.end()) for m in _CLASS_RE.finditer(sentence)]


def _nearest_region(mention: Mention, regions: list[tuple[str, int, int]]) -> str | None:
    def gap(region: tuple[str, int, int]) -> int:
        _, start, end = region
        return start - mention.end if start >= mention.end else mention.start - end

    return min(regions, key=gap)[0] if regions else None


def parse_claims(caption: str) -> Claims:
    """The claims of a caption (see the module docstring for the reading rules)."""
    claims = Claims(banned=[m[0].lower() for m in _BANNED_RE.finditer(caption)])
    for sentence in _SENTENCE_RE.split(caption):
        mentions = _mentions(sentence)
        regions = [(_PHRASE_REGION[m[1].lower()], m.start(), m.end()) for m in _REGION_RE.finditer(sentence)]
        for mention in mentions:
            if mention.cls not in claims.classes:
                claims.classes.append(mention.cls)
            region = _nearest_region(mention, regions)
            if region is not None and (mention.cls, region) not in claims.regions:
                claims.regions.append((mention.cls, region))
        for size in _SIZE_RE.finditer(sentence):
            word = size[1].lower()
            after = sentence[size.end() :]
            if WHOLE_MAP.match(after):
                # "a large portion of the scene": the size of the sentence's first class over the whole map.
                if mentions:
                    claims.sizes.append((mentions[0].cls, None, word))
                continue
            following = re.match(r"\s+of\s+", after)
            named = [m for m in mentions if following and m.start == size.end() + following.end()]
            if named:
                claims.sizes.append((named[0].cls, _nearest_region(named[0], regions), word))
    return claims


@dataclass
class Truth:
    """What a land-cover map shows, as the caption generator saw it."""

    present: list[int]
    """Classes with >= 20 pixels, most frequent first."""
    expected: list[int]
    """Classes a caption should name: the dominant one and each region's top three (in `present` order)."""
    regions: dict[str, list[int]]
    """Each region's top three classes."""
    shares: dict[str | None, dict[int, float]]
    """Share of each class among the non-background pixels, per region and for the whole map (None)."""


def map_truth(label_map: np.ndarray) -> Truth:
    stats = caption_statistics(label_map)
    shares: dict[str | None, dict[int, float]] = {None: dict(class_shares(label_map))}
    for name, (rows, cols) in region_slices(*label_map.shape).items():
        shares[name] = dict(class_shares(label_map[rows, cols]))
    regions = {r: [c for c, _ in stats.regions[r]] for r in REGIONS}
    present = [c for c, _ in stats.overall]
    described = set(present[:1]).union(*regions.values())
    return Truth(
        present=present,
        expected=[c for c in present if c in described],
        regions=regions,
        shares=shares,
    )


@dataclass
class CaptionScore:
    named: list[str]
    present: list[str]
    invented: list[str]
    missed: list[str]
    precision: float | None
    recall: float | None
    dominant_first: bool | None
    region_agreement: float | None
    size_agreement: float | None
    banned_words: list[str]


def _ratio(hits: int, total: int) -> float | None:
    return hits / total if total else None


def score_caption(caption: str, label_map: np.ndarray) -> CaptionScore:
    """How far one caption agrees with one land-cover map."""
    claims, truth = parse_claims(caption), map_truth(label_map)
    named, present, expected = claims.classes, truth.present, truth.expected
    if not named and not present:
        precision = recall = 1.0
    else:
        precision = _ratio(sum(c in present for c in named), len(named))
        recall = _ratio(sum(c in named for c in expected), len(expected))
    regions = [c in truth.regions[r] for c, r in claims.regions]
    sizes = [word in size_words(truth.shares[r].get(c, 0.0)) for c, r, word in claims.sizes]
    name = lambda cs: [LAND_COVER_CLASSES[c].key for c in cs]  # noqa: E731
    return CaptionScore(
        named=name(named),
        present=name(present),
        invented=name([c for c in named if c not in present]),
        missed=name([c for c in expected if c not in named]),
        precision=precision,
        recall=recall,
        dominant_first=(bool(named) and named[0] == present[0]) if present else None,
        region_agreement=_ratio(sum(regions), len(regions)),
        size_agreement=_ratio(sum(sizes), len(sizes)),
        banned_words=claims.banned,
    )


METRICS = ("precision", "recall", "dominant_first", "region_agreement", "size_agreement")


def summarise(scores: Iterable[CaptionScore]) -> dict[str, Any]:
    """Dataset means of the per-caption metrics (each over the captions where it is defined), the banned-word rate
    (share of captions with any) and the classes invented most often."""
    scores = list(scores)
    out: dict[str, Any] = {"captions": len(scores)}
    for metric in METRICS:
        values = [float(getattr(s, metric)) for s in scores if getattr(s, metric) is not None]
        out[metric] = round(float(np.mean(values)), 4) if values else None
        out[f"{metric}_n"] = len(values)
    out["banned_word_rate"] = round(sum(bool(s.banned_words) for s in scores) / len(scores), 4) if scores else None
    invented: dict[str, int] = {}
    for s in scores:
        for key in s.invented:
            invented[key] = invented.get(key, 0) + 1
    out["invented"] = dict(sorted(invented.items(), key=lambda kv: -kv[1]))
    return out


def evaluate_faithfulness(
    captions: Mapping[str, str], label_maps: Mapping[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Dataset summary and per-caption scores of `captions` (name -> caption) against `label_maps` (name -> map)."""
    per_caption = {name: asdict(score_caption(text, label_maps[name])) for name, text in captions.items()}
    return summarise(CaptionScore(**s) for s in per_caption.values()), per_caption


def write_faithfulness(path: str | Path, summary: dict[str, Any], per_caption: dict[str, dict[str, Any]]) -> Path:
    """Write the results file of `earthvl eval faithfulness` (atomically)."""
    return write_bytes(path, json.dumps({"summary": summary, "captions": per_caption}, indent=1).encode())


def read_faithfulness(path: str | Path) -> dict[str, Any]:
    """The dataset summary of a faithfulness results file; errors name the file and the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise EarthvlError(f"faithfulness results {path}: cannot read it as JSON: {error}") from error
    summary = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict):
        raise EarthvlError(f"faithfulness results {path}: no 'summary' object")
    for metric in METRICS:
        value = summary.get(metric)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise EarthvlError(f"faithfulness results {path}: summary.{metric} is not a number or null: {value!r}")
    return summary


def shuffled_pairs(names: list[str], seed: int = 0) -> dict[str, str]:
    """Name -> another name (a seeded derangement): pairs each caption with another patch's map, a chance baseline."""
    if len(names) < 2:
        return dict(zip(names, names))
    order = list(np.random.default_rng(seed).permutation(len(names)))
    return {names[order[i]]: names[order[(i + 1) % len(names)]] for i in range(len(names))}


__all__ = [
    "evaluate_faithfulness", "parse_claims", "read_faithfulness", "score_caption", "shuffled_pairs", "summarise",
    "write_faithfulness",
]
