"""The model families earthvl trains, evaluates and publishes: one record each, the home of every fact that differs
by family.

A family has one name everywhere: `earthvl train <name>`, the `family` of an eval results file, the model card, the
quickstart's `runs/<name>` and the demo's model slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from earthvl.models import blip2, clip, vlm


@dataclass(frozen=True)
class Family:
    """How a model family is recognised, loaded, evaluated, trained and described on the Hub."""

    name: str
    display: str
    """How prose names the architecture."""
    model_types: tuple[str, ...]
    """transformers `model_type`s of its checkpoints."""
    model_class: str
    processor_class: str
    load: Callable[..., tuple[Any, Any]]
    """Loads a checkpoint: `(path or Hub id, **load_pretrained options) -> (model, processor)`."""
    load_adapter: Callable[..., tuple[Any, Any]] | None
    """Loads a PEFT adapter folder on its base: `(folder, base=..., **options)`; None where training saves full
    models."""
    tasks: tuple[str, ...]
    """The `earthvl eval` tasks it can do."""
    task_words: str
    """What it is for, as the model card says it."""
    tiny_model: str
    """The name of its tiny model (`earthvl.models.tiny`)."""
    recipes: tuple[str, str]
    """(recipe for its tiny model, recipe for a real checkpoint: the paper's)."""
    pipeline_tag: str
    tag: str
    """Hub tag of the architecture."""
    citation: str
    """Key of its paper in the model card template's citations."""

    @property
    def adapter_module(self) -> str | None:
        """The module a user imports the adapter loader from."""
        return self.load_adapter.__module__ if self.load_adapter else None

    def default_recipe(self, model: str) -> str:
        """The tiny recipe for the family's tiny model, else the paper's recipe."""
        tiny, real = self.recipes
        return tiny if model == self.tiny_model else real


CLIP = Family(
    name="clip",
    display="CLIP",
    model_types=("clip",),
    model_class="CLIPModel",
    processor_class="CLIPProcessor",
    load=clip.load_clip,
    load_adapter=None,
    tasks=("classify", "retrieve"),
    task_words="zero-shot scene classification and image-text retrieval",
    tiny_model="tiny-clip",
    recipes=("clip/tiny", "clip/gaia"),
    pipeline_tag="zero-shot-image-classification",
    tag="clip",
    citation="clip",
)
BLIP2 = Family(
    name="blip2",
    display="BLIP-2",
    model_types=("blip-2",),
    model_class="Blip2ForConditionalGeneration",
    processor_class="AutoProcessor",
    load=blip2.load_blip2,
    load_adapter=blip2.load_adapter,
    tasks=("caption",),
    task_words="captioning",
    tiny_model="tiny-blip2",
    recipes=("blip2/tiny", "blip2/gaia"),
    pipeline_tag="image-to-text",
    tag="blip-2",
    citation="blip2",
)
VLM = Family(
    name="vlm",
    display="LLaVA",
    model_types=("llava",),
    model_class="LlavaForConditionalGeneration",
    processor_class="AutoProcessor",
    load=vlm.load_vlm,
    load_adapter=vlm.load_adapter,
    tasks=("caption", "classify"),
    task_words="captioning, scene classification and visual question answering",
    tiny_model="tiny-llava",
    recipes=("vlm/tiny", "vlm/geochat"),
    pipeline_tag="image-text-to-text",
    tag="llava",
    citation="llava",
)
FAMILIES: dict[str, Family] = {family.name: family for family in (VLM, CLIP, BLIP2)}
"""Family name -> its record, in the order the quickstart trains them."""


def family_of_model_type(model_type: str | None) -> Family | None:
    """The family whose checkpoints have this transformers `model_type`, or None."""
    return next((family for family in FAMILIES.values() if model_type in family.model_types), None)


def family_of_class(model_class: str | None) -> Family | None:
    """The family whose model class is `model_class` (e.g. a PEFT adapter's `base_model_class`), or None."""
    return next((family for family in FAMILIES.values() if family.model_class == model_class), None)
