"""Model cards for trained earthvl models: `model-index` metrics from `earthvl eval` results files
(`earthvl.cards.hub_metrics`), and a body rendered from `templates/model_card.md` with the sections of
`earthvl.cards.model_sections` (loading code, training data and recipe, hardware, evaluation tables with the commands
that reproduce them), intended use, limitations and citations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from huggingface_hub import ModelCard, ModelCardData

from earthvl.atomic import write_bytes
from earthvl.cards import model_sections as sections
from earthvl.cards.hub_metrics import eval_results
from earthvl.cards.model_folder import read_model_folder
from earthvl.cards.naming import display_name, is_hub_id
from earthvl.cards.results_files import EVAL_DIR, copy_results, load_results
from earthvl.dataset_folder import CARD_FILE
from earthvl.errors import EarthvlError
from earthvl.models.families import FAMILIES, VLM
from earthvl.training_output import VISION_FILE

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
TAGS = ("remote-sensing", "earth-observation", "earthvl")


def render_model_card(
    results: Sequence[str | Path | Mapping[str, Any]] = (),
    *,
    model_dir: str | Path | None = None,
    model_id: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] = (),
    license: str | None = None,
    merged: bool = False,
) -> ModelCard:
    """The card of one model from its results files (paths or results dicts) and, when given, its training output
    folder (`merged` describes `model_dir/merged` instead of the adapter). `model_id` (the Hub id the card is for)
    defaults to the results' model id, else the folder's name; `base_model` to what the results or the adapter
    record, else what the folder's `run.json` records; so does `datasets`."""
    loaded = load_results(results)
    folder = read_model_folder(model_dir, merged=merged) if model_dir is not None else None
    recorded = loaded[0].data["model"] if loaded else {}
    model_id = model_id or recorded.get("id") or (folder.path.resolve().name if folder else None)
    if not model_id:
        raise EarthvlError("nothing to describe: give results files or a model folder")
    family = recorded.get("family") or (folder.family if folder else None)
    if folder and folder.family and family != folder.family:
        raise EarthvlError(f"the results are of a {family} model but {folder.path} holds a {folder.family} model")
    run = folder.run if folder else {}
    base = base_model or recorded.get("base_model") or (folder.base_model if folder else None) or run.get("base_model")
    base = display_name(base) if base else None
    datasets = list(datasets) or [entry["spec"] for entry in run.get("datasets") or [] if entry.get("spec")]
    adapter = folder.adapter if folder else bool(recorded.get("base_model"))
    evals = eval_results(loaded, model_id)
    data = ModelCardData(
        model_name=model_id,
        eval_results=evals or None,
        base_model=base if is_hub_id(base) else None,
        datasets=[d.split(":")[0] for d in datasets if is_hub_id(d.split(":")[0])] or None,
        license=license,
        library_name="peft" if adapter else "transformers",
        pipeline_tag=FAMILIES[family].pipeline_tag if family else None,
        tags=[*TAGS, *([FAMILIES[family].tag] if family else []), *(["lora"] if adapter else [])],
    )
    geochat = any("geochat" in r.data["metrics"] for r in loaded)
    citations = [FAMILIES[family].citation] if family else [spec.citation for spec in FAMILIES.values()]
    return ModelCard.from_template(
        data,
        template_path=str(TEMPLATE),
        model_name=model_id,
        summary=sections.summary(family, adapter, merged, base),
        usage=sections.usage(family, adapter, model_id, base, bool(folder and folder.files.get(VISION_FILE))),
        training_data=sections.training_data(folder, datasets),
        recipe=sections.recipe(folder, base, datasets),
        hardware=sections.hardware(folder),
        evaluations=[sections.evaluation(r, model_id, base if adapter else None) for r in loaded],
        intended_tasks=FAMILIES[family].task_words if family else "captioning, classification and retrieval",
        family=family,
        citations=[*citations, *(["geochat"] if geochat or family == VLM.name else [])],
    )


def write_model_card(
    results: Sequence[str | Path | Mapping[str, Any]] = (),
    out: str | Path | None = None,
    *,
    model_dir: str | Path | None = None,
    **options: Any,
) -> Path:
    """Render the card (see `render_model_card`) and write it to `out` (default: `model_dir/README.md`). A card
    written into its model folder gets the results files beside it, under `eval/`, so that `earthvl publish`
    pushes both."""
    if out is None and model_dir is None:
        raise EarthvlError("say where the card goes: --out PATH, or --model_dir to write MODEL_DIR/README.md")
    out = Path(out) if out is not None else Path(model_dir) / CARD_FILE
    card = render_model_card(results, model_dir=model_dir, **options)
    if model_dir is not None and out.resolve() == (Path(model_dir) / CARD_FILE).resolve():
        copy_results(load_results(results), Path(model_dir) / EVAL_DIR)
    write_bytes(out, str(card).encode("utf-8"))
    return out
