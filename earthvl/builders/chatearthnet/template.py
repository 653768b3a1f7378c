"""The `template` backend of `earthvl generate chatearthnet` (and the sample world's captions): deterministic
captions rendering ChatEarthNet's land-cover statistics, faithful to the label map.

The gpt35 style follows the upstream generation rules: spatial order, dominant class first with its location,
classes of each part in descending coverage, varied wording, the main theme last, none of the banned words.
The gpt4v style adds per-class percentages and shape words, and no colour words.
"""

from __future__ import annotations

import numpy as np

from earthvl.builders.chatearthnet.generation import REGIONS, SIZE_NOUNS, CaptionStatistics, size_word
from earthvl.builders.chatearthnet.landcover import LAND_COVER_CLASSES

NODATA_CAPTION = "This image contains no valid land cover information; it is a blank no-data placeholder."

THEMES = {
    "water": "a landscape shaped by open water",
    "developed": "an urbanised landscape",
    "tree": "a forested landscape",
    "shrub": "a dry shrubland landscape",
    "grass": "an open grassland landscape",
    "crop": "an agricultural landscape",
    "bare": "a barren, sparsely covered landscape",
    "snow": "a cold, snow-covered landscape",
    "wetland": "a waterlogged wetland landscape",
    "mangroves": "a coastal mangrove landscape",
    "moss": "a tundra landscape covered by moss and lichen",
}
DOMINANT_OPENINGS = (
    "This image is dominated by {name}, which covers {amount} of the scene, mostly in the {where} part.",
    "The main land cover in this image is {name}, with {amount} of the scene, concentrated in the {where} part.",
    "The scene is primarily made up of {name}, taking up {amount} of the area, especially in the {where} part.",
)
REGION_SENTENCES = (
    "In the {region} part, there is {items}.",
    "The {region} part contains {items}.",
    "Looking at the {region} part, we find {items}.",
)
CLOSINGS = ("Overall, the image shows {theme}.", "In summary, this is {theme}.", "Taken together, the scene depicts {theme}.")


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _amount(rng: np.random.Generator, share: float) -> str:
    return _article(f"{size_word(share, rounded=False)} {SIZE_NOUNS[int(rng.integers(len(SIZE_NOUNS)))]}")


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _dominant_region(stats: CaptionStatistics) -> str:
    dominant = stats.dominant

    def share_in(region: str) -> float:
        return dict(stats.regions[region]).get(dominant, 0.0)

    return max(REGIONS[:4], key=share_in)


def gpt35_caption(stats: CaptionStatistics, rng: np.random.Generator) -> str:
    """A caption in the style of ChatEarthNet's gpt-3.5 captions."""
    if stats.dominant is None:
        return NODATA_CAPTION
    dominant, share = stats.overall[0]
    sentences = [
        DOMINANT_OPENINGS[int(rng.integers(len(DOMINANT_OPENINGS)))].format(
            name=LAND_COVER_CLASSES[dominant].name, amount=_amount(rng, share), where=_dominant_region(stats)
        )
    ]
    for region in REGIONS:
        if not stats.regions[region]:
            continue
        items = [f"{_amount(rng, s)} of {LAND_COVER_CLASSES[c].name}" for c, s in stats.regions[region]]
        template = REGION_SENTENCES[int(rng.integers(len(REGION_SENTENCES)))]
        sentences.append(template.format(region=region, items=_join(items)))
    closing = CLOSINGS[int(rng.integers(len(CLOSINGS)))]
    sentences.append(closing.format(theme=THEMES[LAND_COVER_CLASSES[dominant].key]))
    return " ".join(sentences)


def _shape_sentence(label_map: np.ndarray, key: str) -> str | None:
    index = next(c.index for c in LAND_COVER_CLASSES if c.key == key)
    mask = label_map == index
    share = mask.mean()
    if share < 0.02:
        return None
    if key == "water":
        rows, cols = np.nonzero(mask)
        span = max(np.ptp(rows), np.ptp(cols)) + 1
        if share < 0.25 and span >= 0.9 * max(label_map.shape):
            return "Water forms a narrow, winding river that crosses the whole image."
        return "Water forms a broad, compact body with smooth shores."
    if key == "developed":
        if share > 0.3:
            return "Developed areas form a dense, blocky built-up zone."
        return "Developed areas are scattered as small rectangular blocks."
    if key == "crop":
        return "Crop land is divided into regular rectangular fields."
    raise ValueError(f"no shape words for class {key!r}")


def gpt4v_caption(stats: CaptionStatistics, label_map: np.ndarray, rng: np.random.Generator) -> str:
    """A longer caption in the style of ChatEarthNet's gpt-4-vision captions: percentages and shape words."""
    if stats.dominant is None:
        return NODATA_CAPTION
    names = [(LAND_COVER_CLASSES[c].name, round(100 * s)) for c, s in stats.overall]
    first = f"The image presents {names[0][0]} as the main land cover, taking up about {names[0][1]}% of the area"
    rest = [f"{n} ({p}%)" for n, p in names[1:4]]
    overview = first + (", followed by " + _join(rest) if rest else "") + "."
    shapes = [s for key in ("water", "developed", "crop") if (s := _shape_sentence(label_map, key))]
    parts = []
    for region in REGIONS:
        if stats.regions[region]:
            items = [f"{LAND_COVER_CLASSES[c].name} ({round(100 * s)}%)" for c, s in stats.regions[region]]
            parts.append(f"The {region} part holds {_join(items)}.")
    closing = CLOSINGS[int(rng.integers(len(CLOSINGS)))].format(theme=THEMES[LAND_COVER_CLASSES[stats.dominant].key])
    paragraphs = [overview, " ".join(shapes), " ".join(parts), closing]
    return "\n\n".join(p for p in paragraphs if p)
