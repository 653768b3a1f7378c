"""The demo's handlers and the quickstart's real-id plan on the Hub replicas (tests/hub), addressed by their real ids
(`llava-hf/llava-1.5-7b-hf`, `openai/clip-vit-base-patch32`, `Salesforce/blip2-opt-2.7b` resolve offline to them)."""

from pathlib import Path

import pytest

from earthvl.cli import COMMANDS
from earthvl.eval.captioning import LLAVA_MAX_NEW_TOKENS
from earthvl.eval.classnames import EUROSAT, EUROSAT_TEMPLATES
from earthvl.eval.generation import LlavaGenerator
from earthvl.eval.eval_model import load_eval_model
from earthvl.models.chat_templates import LLAVA_CHAT_TEMPLATE
from earthvl.models.clip import TextChunker, image_embeddings, text_embeddings, text_limit
from earthvl.models.vlm import load_vlm, training_chat_template
from earthvl.prompts import CAPTION_INSTRUCTION
from earthvl.recipes import recipe_path
from earthvl.quickstart_plan import QuickstartArguments, plan
from earthvl.space.app import DemoApp, DemoSettings
from earthvl.space.gallery import make_gallery, read_gallery
from hub_models import BLIP2, CLIP_B32, LLAVA, hub_id
from test_quickstart import _parses
from test_space_app import direct_top5, rgb

FAMILY_MODELS = {"vlm": LLAVA, "clip": CLIP_B32, "blip2": BLIP2}


@pytest.fixture(scope="module")
def app(hub_replica, sample_gaia, tmp_path_factory):
    gallery = make_gallery(sample_gaia, tmp_path_factory.mktemp("hub-space") / "gallery", config="default", split="train", count=6, size=64)
    settings = DemoSettings(hub_id(hub_replica, LLAVA), hub_id(hub_replica, CLIP_B32), str(gallery))
    return DemoApp(settings, device="cpu")


@pytest.mark.slow
def test_demo_handlers_on_llava_hf_and_openai_clip(app, sample_world):
    scene = sorted(sample_world.scenes.glob("*/*.png"))[0]
    vlm = app.vlm()
    generator = LlavaGenerator(vlm.model, vlm.processor, CAPTION_INSTRUCTION, max_new_tokens=LLAVA_MAX_NEW_TOKENS)
    # the base checkpoint answers with its own template: llava-hf's prompt, and the tokenizer's one <s>
    assert generator.prompt == f"USER: <image>\n{CAPTION_INSTRUCTION} ASSISTANT:" and generator.add_special_tokens
    answer, status = app.ui_caption({"path": str(scene)}, CAPTION_INSTRUCTION)
    assert (answer, status) == (generator([rgb(scene)])[0], f"Answered by `{LLAVA}`.")

    expected = direct_top5(app, scene, list(EUROSAT.prompts), EUROSAT_TEMPLATES)
    scores = app.classify(str(scene), "", "EuroSAT")
    assert list(scores) == [name for name, _ in expected]
    assert list(scores.values()) == pytest.approx([p for _, p in expected], abs=1e-6)
    images = read_gallery(Path(app.settings.gallery))
    query = images[2].caption
    clip = app.clip()
    chunker = TextChunker(clip.processor.tokenizer, text_limit(clip.model, clip.processor.tokenizer), mode="truncate")
    pixels = clip.processor(images=[rgb(image.path) for image in images], return_tensors="pt")["pixel_values"]
    scores = (text_embeddings(clip.model, chunker, [query]) @ image_embeddings(clip.model, pixels).T)[0]
    best = scores.argsort(descending=True).tolist()[:3]
    assert app.retrieve(query, 3) == [(str(images[i].path), images[i].label()) for i in best]

def test_the_quickstarts_real_id_plan_loads_every_model_and_parses_every_command(hub_replica):
    args = QuickstartArguments(
        out="run", gaia_dataset="earthvl/gaia", chatearthnet_dataset="earthvl/chatearthnet", classify_dataset="eurosat",
        vlm_model=hub_id(hub_replica, LLAVA), clip_model=hub_id(hub_replica, CLIP_B32), blip2_model=hub_id(hub_replica, BLIP2),
        max_train_steps=500, max_eval_samples=1000,
    )  # fmt: skip
    work = plan(args)
    commands = {step.name: step.command for step in work.steps if step.command}
    for name, argv in commands.items():
        _parses(argv)
        if name.startswith("train "):
            family = argv[1]
            parser = __import__(COMMANDS[f"train {family}"][0], fromlist=["make_parser"]).make_parser()
            rest = argv[2:]
            rest[rest.index("--config") + 1] = recipe_path(rest[rest.index("--config") + 1])
            *_, model_args = parser.parse_args_and_config([*rest, "--use_cpu", "true"])  # the recipes' bf16 wants a GPU
            assert model_args.model_name_or_path == FAMILY_MODELS[family]
        if name.startswith("eval ") and name.endswith(" before"):  # the base checkpoints, by id
            model = argv[argv.index("--model") + 1]
            loaded = load_eval_model(model, task=argv[1])
            assert loaded.name == model and model in FAMILY_MODELS.values()
    assert commands["train vlm"][:4] == ["train", "vlm", "--config", "vlm/geochat"]
    # what `train vlm` would train llava-hf with: earthvl's template, since llava-hf's cannot end turns
    model, processor = load_vlm(LLAVA)
    assert training_chat_template(model, processor) == LLAVA_CHAT_TEMPLATE
