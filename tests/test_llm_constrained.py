"""Constrained decoding: the tiny random-weight LLaVA, which otherwise babbles, writes JSON valid for the schema."""

import json

import pytest
from gaia_scrape_world import encoded, scene

from earthvl.builders.gaia.annotate.schema import RSImageFiltered, json_schema, parse_answer
from earthvl.llm.backends import ChatRequest, TransformersBackend, image_data_url
from earthvl.llm.constrained import json_logits_processor
from earthvl.model_names import resolve_model

SMALL = {
    "type": "object",
    "properties": {"resolution": {"enum": ["Low", "Moderate", "High", "Very High"]}, "is_chart": {"type": "boolean"},
                   "tag": {"type": "string", "maxLength": 8}},
    "required": ["resolution", "is_chart", "tag"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = resolve_model("tiny-llava")
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path).tokenizer


def test_the_tiny_model_writes_schema_valid_json_only_when_constrained(tiny):
    import torch

    model, tokenizer = tiny
    prompt = tokenizer("Describe the scene as JSON:", return_tensors="pt")
    answers = []
    for seed in range(2):
        torch.manual_seed(seed)
        output = model.generate(**prompt, max_new_tokens=60, do_sample=True, pad_token_id=tokenizer.pad_token_id,
                                logits_processor=[json_logits_processor(tokenizer, SMALL)])
        answers.append(json.loads(tokenizer.decode(output[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)))
    assert all(set(a) == {"resolution", "is_chart", "tag"} for a in answers)
    assert all(a["resolution"] in SMALL["properties"]["resolution"]["enum"] and len(a["tag"]) <= 8 for a in answers)
    torch.manual_seed(0)
    free = model.generate(**prompt, max_new_tokens=30, do_sample=True, pad_token_id=tokenizer.pad_token_id)
    with pytest.raises(ValueError):  # the same model unconstrained: not JSON
        json.loads(tokenizer.decode(free[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True))


@pytest.mark.slow
def test_the_local_backend_annotates_an_image_with_a_valid_rs_image_record():
    backend = TransformersBackend(resolve_model("tiny-llava"), device="cpu")
    schema = json_schema(RSImageFiltered, max_chars=16)
    request = ChatRequest(
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_data_url(encoded(scene(1)))}},
                                               {"type": "text", "text": "Annotate this image."}]}],
        max_tokens=400, temperature=1.0, seed=0, json_schema=schema, schema_name="RS_image",
    )
    result = backend.chat(request)
    assert result.finish_reason == "stop"
    answer = parse_answer(result.text, RSImageFiltered)
    assert len(answer.captions) == 5 and all(c.startswith("The image showcases: ") for c in answer.captions)
    assert answer.tag is None or len(answer.tag) == 3
