"""The structured answers asked of the models: the notebook's `RS_image` and `Summary`, as pydantic models.

`RS_image` follows Orion-AI-Lab/GAIA's annotation notebook: three tags, a location, modalities, satellites, sensors,
a resolution class and five captions opening with "The image showcases:". An earlier version of the notebook also
asked `is_remote_sensing` and `is_chart`, used to filter out images that are not Earth observation or are charts;
`filters=True` adds them. The answer's `modality` is the dataset's `modalities` column.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, Optional

from pydantic import BaseModel, Field, ValidationError

from earthvl.builders.gaia.layout import CAPTION_PREFIX, CAPTIONS_PER_IMAGE, RESOLUTIONS

TAGS = 3
SCHEMA_NAME = "RS_image"

Resolution = Enum("Resolution", {name.upper().replace(" ", "_"): name for name in RESOLUTIONS}, type=str)
Resolution.__doc__ = "Spatial resolution class of the sensor (not of the image file)."


class RSImage(BaseModel):
    """Remote-sensing metadata and five captions of one image, from the image and its article."""

    model_config = {"title": SCHEMA_NAME, "extra": "forbid"}

    tag: Optional[list[str]] = Field(
        description="Three generic domain-specific tags for the topic: keywords, categories or themes.",
        min_length=TAGS,
        max_length=TAGS,
    )
    location: Optional[str] = Field(
        description="Point location shown, preferably 'Landmark, City, Country', else a region or continent."
    )
    modality: Optional[list[str]] = Field(description="Remote-sensing modalities or sensor types, e.g. Optical, Thermal.")
    satellite: Optional[list[str]] = Field(description="Satellites that acquired the image, e.g. Sentinel-2.")
    sensor: Optional[list[str]] = Field(description="Sensors or instruments, e.g. MultiSpectral Instrument (MSI).")
    resolution: Optional[Resolution] = Field(description="Spatial resolution class of the sensor or instrument.")
    captions: list[str] = Field(
        description=f"Five diverse, detailed captions of the image, each starting with '{CAPTION_PREFIX}'.",
        min_length=CAPTIONS_PER_IMAGE,
        max_length=CAPTIONS_PER_IMAGE,
    )


class RSImageFiltered(RSImage):
    """`RSImage` with the two filters of the notebook's earlier version."""

    model_config = {"title": SCHEMA_NAME, "extra": "forbid"}

    is_remote_sensing: bool = Field(
        description="True for a remote-sensing image of the Earth's surface (satellite or aerial); false for "
        "pictures of instruments, spacecraft or people."
    )
    is_chart: bool = Field(description="True when the image is a chart or a graph.")


class Summary(BaseModel):
    """A remote-sensing summary of a long article."""

    model_config = {"title": "Summary", "extra": "forbid"}

    summary: str = Field(description="The article's main information and key visual details, concisely.")


def annotation_model(filters: bool) -> type[RSImage]:
    """The pydantic model of an annotation answer, with or without the two filter fields."""
    return RSImageFiltered if filters else RSImage


def json_schema(model: type[BaseModel], max_chars: int | None = None) -> dict[str, Any]:
    """The JSON schema of `model` for structured output: every property required (as OpenAI's strict mode wants),
    enums inlined, captions held to their opening by a pattern, and with `max_chars` every string bounded (so
    constrained decoding of a small local model always ends: lists without a bound get at most `TAGS` items)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    schema = _inline(schema, definitions)
    schema["required"] = list(schema["properties"])
    schema["additionalProperties"] = False
    if max_chars is not None:
        _bound_strings(schema, max_chars)
    captions = schema["properties"].get("captions")
    if captions is not None:  # a pattern: decoders take maxLength and pattern not together
        rest = ".+" if max_chars is None else f".{{1,{max(max_chars - len(CAPTION_PREFIX) - 1, 1)}}}"
        captions["items"] = {"type": "string", "pattern": f"^{re.escape(CAPTION_PREFIX)} {rest}$"}
    return schema


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(definitions[node["$ref"].rsplit("/", 1)[1]], definitions)
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node


def _bound_strings(node: Any, max_chars: int) -> None:
    if isinstance(node, dict):
        if node.get("type") == "string" and "enum" not in node:
            node["maxLength"] = max_chars
        if node.get("type") == "array":
            node.setdefault("maxItems", TAGS)
        for value in node.values():
            _bound_strings(value, max_chars)
    elif isinstance(node, list):
        for item in node:
            _bound_strings(item, max_chars)


class SchemaViolation(ValueError):
    """An answer that is not valid JSON or not valid for the schema; the message says where."""


def parse_answer(text: str, model: type[BaseModel]) -> BaseModel:
    """The answer `text` as an instance of `model`; a `SchemaViolation` naming the first problems otherwise."""
    try:
        answer = model.model_validate_json(text)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or 'answer'}: {item['msg']}" for item in error.errors()[:3]
        )
        raise SchemaViolation(f"answer violates the {model.model_config['title']} schema ({problems})") from None
    if isinstance(answer, RSImage):
        bad = [index for index, caption in enumerate(answer.captions) if not caption.startswith(CAPTION_PREFIX)]
        if bad:
            raise SchemaViolation(f"captions {bad} do not start with '{CAPTION_PREFIX}'")
    return answer


def gaia_fields(answer: RSImage) -> dict[str, Any]:
    """The GAIA record fields an annotation fills, under the upstream names (`modality` -> `modalities`)."""
    return {
        "tag": answer.tag,
        "location": answer.location,
        "modalities": answer.modality,
        "satellite": answer.satellite,
        "sensor": answer.sensor,
        "resolution": None if answer.resolution is None else answer.resolution.value,
        "captions": answer.captions,
    }

