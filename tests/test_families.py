"""The family table (`earthvl.models.families`): one name per family across the CLI, eval, cards and the quickstart, and
every name in a record points at something that exists."""

from __future__ import annotations

import pytest
import transformers

import earthvl.models.tiny as tiny
from earthvl.cards.model import load_results
from earthvl.cli import COMMANDS
from earthvl.errors import EarthvlError
from earthvl.eval_results import TASKS
from earthvl.models.families import BLIP2, CLIP, FAMILIES, VLM, family_of_class, family_of_model_type
from earthvl.recipes import shipped_recipes

FAMILY_LIST = list(FAMILIES.values())


def test_the_three_families_by_name():
    assert list(FAMILIES) == ["vlm", "clip", "blip2"]
    assert [FAMILIES[name] for name in FAMILIES] == [VLM, CLIP, BLIP2]


@pytest.mark.parametrize("family", FAMILY_LIST, ids=lambda family: family.name)
def test_each_family_is_trained_by_the_command_of_its_name(family):
    assert f"train {family.name}" in COMMANDS
    assert COMMANDS[f"train {family.name}"][0] == f"earthvl.scripts.train_{family.name}"


@pytest.mark.parametrize("family", FAMILY_LIST, ids=lambda family: family.name)
def test_each_family_names_real_loaders_recipes_and_tiny_model(family):
    assert family.load.__name__ == f"load_{family.name}"
    if family.load_adapter is not None:
        assert family.load_adapter.__module__ == family.load.__module__ == family.adapter_module
    assert set(family.recipes) <= set(shipped_recipes())
    assert family.tiny_model in tiny.TINY_MODELS
    assert set(family.tasks) <= set(TASKS)
    assert getattr(transformers, family.model_class).config_class.model_type in family.model_types
    assert hasattr(transformers, family.processor_class)


def test_families_are_found_by_model_type_and_class():
    assert family_of_model_type("llava") is VLM
    assert family_of_model_type("blip-2") is BLIP2
    assert family_of_model_type("clip") is CLIP
    assert family_of_model_type("bert") is None
    assert family_of_class("LlavaForConditionalGeneration") is VLM
    assert family_of_class("Blip2ForConditionalGeneration") is BLIP2
    assert family_of_class(None) is None


def test_default_recipe_is_the_tiny_one_for_the_tiny_model_only():
    assert VLM.default_recipe("tiny-llava") == "vlm/tiny"
    assert VLM.default_recipe("llava-hf/llava-1.5-7b-hf") == "vlm/geochat"
    assert BLIP2.default_recipe("tiny-clip") == "blip2/gaia"


def test_only_clip_has_no_adapter_loader():
    assert CLIP.load_adapter is None and CLIP.adapter_module is None
    assert VLM.adapter_module == "earthvl.models.vlm" and BLIP2.adapter_module == "earthvl.models.blip2"


def test_a_model_card_reads_results_of_a_known_family_only():
    results = {
        "format": "earthvl-eval/1", "task": "caption", "model": {"id": "m", "family": "llava"},
        "dataset": {"id": "d", "split": "test"}, "metrics": {"coco": {"bleu_4": 0.1}}, "failures": {},
        "settings": {}, "versions": {}, "started": "2026-01-01T00:00:00Z", "seconds": 1.0,
    }  # fmt: skip
    with pytest.raises(EarthvlError, match="model.family 'llava' is not one of vlm, clip, blip2"):
        load_results([results])
    results["model"]["family"] = "vlm"
    assert load_results([results])[0].data["model"]["family"] == "vlm"
