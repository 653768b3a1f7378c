"""Model cards for trained earthvl models: `model-index` metrics from `earthvl eval` results files, and a body
rendered from `templates/model_card.md` (loading code, training recipe, hardware, evaluation tables with the
commands that reproduce them, intended use, limitations, citations).

Every metric of every results file becomes one `huggingface_hub.EvalResult` holding the file's exact value; a
metric the file holds as null (NaN, e.g. acc@5 with fewer than five classes) is left out of the model-index and
shown as n/a in the tables.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from earthvl.atomic import write_bytes
from earthvl.dataset_folder import CARD_FILE
from earthvl.errors import EarthvlError
from earthvl.eval_results import check_results, read_results
from earthvl.models.families import BLIP2, FAMILIES, VLM, family_of_class, family_of_model_type

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
EVAL_DIR = "eval"
"""Folder of the results files, beside the card (in the model folder and in the Hub repo)."""
MERGED_DIR = "merged"
TAGS = ("remote-sensing", "earth-observation", "earthvl")
SOURCE_NAME = "earthvl eval"

TASKS: dict[str, tuple[str, str]] = {
    "caption": ("image-to-text", "Image captioning"),
    "classify": ("zero-shot-image-classification", "Zero-shot scene classification"),
    # The Hub has no image-text retrieval task: retrieval ranks the embeddings the model extracts, which is what
    # the Hub's image-feature-extraction task covers (its task page lists image retrieval among its uses).
    "retrieve": ("image-feature-extraction", "Image-text retrieval"),
}
"""earthvl task -> (Hub task id, readable name)."""
PROTOCOLS = {
    "coco": "COCO toolkit",
    "hf": "HF evaluate style",
    "clip_benchmark": "CLIP_benchmark",
    "geochat": "GeoChat exact match",
}
METRICS: dict[str, tuple[str, str]] = {
    **{f"bleu_{n}": ("bleu", f"BLEU-{n}") for n in range(1, 5)},
    "bleu": ("bleu", "BLEU"),
    "meteor": ("meteor", "METEOR"),
    "rouge_l": ("rouge", "ROUGE-L"),
    "rouge1": ("rouge", "ROUGE-1"),
    "rouge2": ("rouge", "ROUGE-2"),
    "rougeL": ("rouge", "ROUGE-L"),
    "rougeLsum": ("rouge", "ROUGE-Lsum"),
    "cider": ("cider", "CIDEr"),
    "spice": ("spice", "SPICE"),
    "acc1": ("accuracy", "acc@1"),
    "acc5": ("accuracy", "acc@5"),
    "mean_per_class_recall": ("recall", "mean per-class recall"),
    "unmatched": ("unmatched", "answers naming no class"),
    **{
        f"{direction}_R@{k}": ("recall", f"{direction.replace('_to_', '-to-').replace('_', '-')} R@{k}")
        for direction in ("text_to_image", "image_to_text")
        for k in (1, 5, 10, 20)
    },
    "mean_recall": ("recall", "mean recall over R@1/5/10 both ways"),
}
"""Metric key of a results file -> (Hub metric type, readable name); other keys keep their own name."""
PROTOCOL_OF_METRIC = {("hf", "meteor"): "NLTK, HF evaluate style"}
"""Where a metric's implementation says more than its protocol's name."""


RECIPE_KEYS = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
    "lr_scheduler_type", "warmup_steps", "warmup_ratio", "weight_decay", "optim", "bf16", "fp16",
    "activation_checkpointing", "gradient_checkpointing", "seed",
)  # fmt: skip
"""`TrainingArguments` fields a card's recipe shows (the rest stay in training_args.json)."""
STATE_FILE, RESULTS_FILE = "trainer_state.json", "train_results.json"
"""transformers' `Trainer.save_state()` and `save_metrics("train", ...)` files, read when the folder has them."""
SIDE_FILES = (
    "training_args.json", "adapter_config.json", "config.json", "generation_config.json", "captioning.json",
    "vision.json", "text_fit.json", "skipped_images.json", RESULTS_FILE,
)  # fmt: skip
"""The JSON files of an `earthvl train` output folder that a card reads."""
MERGED_FILES = ("config.json", "generation_config.json")
"""What `merged/` overrides of them."""
RECIPE_SOURCES = (
    "training_args.json", "adapter_config.json", "captioning.json", "generation_config.json", "vision.json",
)  # fmt: skip
"""The side files a card's recipe is read from."""


@dataclass
class Results:
    """One results file: its name under `eval/`, its checked content and, if it was read from a file, that file."""

    name: str
    data: dict[str, Any]
    path: Path | None = None

    def content(self) -> bytes:
        """The file's bytes as written by `earthvl eval` (JSON for a results dict)."""
        if self.path is not None:
            return self.path.read_bytes()
        return (json.dumps(self.data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


@dataclass
class ModelFolder:
    """What a trained model folder says about the model (the parts a card shows)."""

    path: Path
    family: str | None
    adapter: bool
    base_model: str | None
    files: dict[str, Any]
    """The JSON side files (training_args.json, adapter_config.json, captioning.json, ...) by name."""
    state: dict[str, Any] | None
    """`trainer_state.json` of the folder, else of its newest checkpoint."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EarthvlError(f"{path} is not readable JSON: {error}") from error


def is_hub_id(name: str | None) -> bool:
    """Whether `name` reads as an ORG/NAME Hub repo id (not a local path or a tiny model name)."""
    if not name or "/" not in name or Path(name).exists() or name.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def display_name(name: str) -> str:
    """A tiny model's cache folder as its name (`.../tiny-blip2-v2` -> `tiny-blip2`); anything else unchanged."""
    from earthvl.models.tiny import TINY_MODELS, TINY_MODELS_VERSION

    tiny = Path(name).name.removesuffix(f"-v{TINY_MODELS_VERSION}")
    return tiny if tiny in TINY_MODELS else name


def _results_name(data: Mapping[str, Any]) -> str:
    dataset = data["dataset"]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(dataset.get("name") or Path(dataset["id"]).name)).strip("-")
    return f"{data['task']}-{slug}-{dataset['split']}.json"


def load_results(results: Sequence[str | Path | Mapping[str, Any]]) -> list[Results]:
    """Read (or check) each results file; an error if they are of different models or two give the same task on the
    same dataset split, or if two files would get one name under `eval/`."""
    loaded: list[Results] = []
    for item in results:
        if isinstance(item, Mapping):
            data = check_results(dict(item))
            loaded.append(Results(_results_name(data), data))
        else:
            loaded.append(Results(Path(item).name, read_results(item), Path(item)))
        family = loaded[-1].data["model"]["family"]
        if family not in FAMILIES:
            raise EarthvlError(f"{loaded[-1].name}: model.family {family!r} is not one of {', '.join(FAMILIES)}")
    models: dict[str, str] = {}
    for r in loaded:
        models.setdefault(r.data["model"]["id"], r.name)
    if len(models) > 1:
        named = ", ".join(f"{model!r} in {name}" for model, name in models.items())
        raise EarthvlError(f"the results are of different models ({named}): one card describes one model")
    seen: dict[Any, str] = {}
    for r in loaded:
        dataset = r.data["dataset"]
        key = (r.data["task"], dataset["id"], dataset.get("config"), dataset["split"], dataset.get("revision"))
        for clash, what in ((key, "task on the same dataset split"), (r.name, "file name")):
            if clash in seen:
                raise EarthvlError(f"results {seen[clash]} and {r.name} have the same {what}: give one of them")
            seen[clash] = r.name
    return loaded


def metric_name(protocol: str, metric: str) -> tuple[str, str]:
    """(Hub metric type, name with the protocol), e.g. ('bleu', 'BLEU-4 (COCO toolkit)')."""
    kind, name = METRICS.get(metric, (metric.lower(), metric))
    return kind, f"{name} ({_protocol(protocol, metric)})"


def _protocol(protocol: str, metric: str) -> str:
    return PROTOCOL_OF_METRIC.get((protocol, metric), PROTOCOLS.get(protocol, protocol))


def eval_results(loaded: Sequence[Results], model_id: str | None = None) -> list[EvalResult]:
    """One `EvalResult` per (results file, protocol, metric) with a value; sourced to the file under `eval/` in the
    repo `model_id` when that is a Hub id (the Hub wants a URL with a source name)."""
    out = []
    for r in loaded:
        task, dataset = r.data["task"], r.data["dataset"]
        url = f"https://huggingface.co/{model_id}/blob/main/{EVAL_DIR}/{r.name}" if is_hub_id(model_id) else None
        for protocol, values in r.data["metrics"].items():
            for metric, value in values.items():
                if value is None:
                    continue
                kind, name = metric_name(protocol, metric)
                out.append(
                    EvalResult(
                        task_type=TASKS[task][0],
                        task_name=TASKS[task][1],
                        dataset_type=dataset["id"],
                        dataset_name=dataset.get("name") or dataset["id"],
                        dataset_config=dataset.get("config"),
                        dataset_split=dataset["split"],
                        dataset_revision=dataset.get("revision"),
                        metric_type=kind,
                        metric_name=name,
                        metric_value=value,
                        source_name=SOURCE_NAME if url else None,
                        source_url=url,
                    )
                )
    return out


def _family(files: Mapping[str, Any]) -> str | None:
    model_type = (files.get("config.json") or {}).get("model_type")
    if model_type:
        family = family_of_model_type(model_type)
    else:
        base_class = ((files.get("adapter_config.json") or {}).get("auto_mapping") or {}).get("base_model_class")
        family = family_of_class(base_class)
    return family.name if family else None


def _newest_state(folder: Path) -> dict[str, Any] | None:
    if (folder / STATE_FILE).is_file():
        return _read_json(folder / STATE_FILE)
    steps = {p.parent.name.removeprefix("checkpoint-"): p for p in folder.glob(f"checkpoint-*/{STATE_FILE}")}
    numbered = {int(step): p for step, p in steps.items() if step.isdigit()}
    return _read_json(numbered[max(numbered)]) if numbered else None


def read_model_folder(folder: str | Path, *, merged: bool = False) -> ModelFolder:
    """A trained model folder (full model or PEFT adapter), with `merged/` as the model when `merged`; an error
    naming what is missing otherwise."""
    path = Path(folder)
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise EarthvlError(f"{path} is not a trained model folder: it has no config.json or adapter_config.json")
    files = {name: _read_json(path / name) for name in SIDE_FILES if (path / name).is_file()}
    if merged:
        model = path / MERGED_DIR
        if not (model / "config.json").is_file():
            raise EarthvlError(f"{path} has no merged model ({MERGED_DIR}/config.json): train with --merge_adapter")
        files.update({name: _read_json(model / name) for name in MERGED_FILES if (model / name).is_file()})
    base = (files.get("adapter_config.json") or {}).get("base_model_name_or_path")
    return ModelFolder(
        path=path,
        family=_family(files),
        adapter="adapter_config.json" in files and not merged,
        base_model=base,
        files=files,
        state=_newest_state(path),
    )


def _usage(family: str | None, adapter: bool, model_id: str, base: str | None, vision: bool) -> str:
    if family is None:
        return f"The model family is not recorded; `{model_id}` loads with the transformers class of its config."
    model_class, processor_class = FAMILIES[family].model_class, FAMILIES[family].processor_class
    imports = sorted({model_class, processor_class})
    if not adapter:
        return (
            f"```python\nfrom transformers import {', '.join(imports)}\n\n"
            f'model = {model_class}.from_pretrained("{model_id}")\n'
            f'processor = {processor_class}.from_pretrained("{model_id}")\n```'
        )
    base_shown = base or "BASE_MODEL"
    folder = f'snapshot_download("{model_id}")' if is_hub_id(model_id) else f'"{model_id}"'
    download = "from huggingface_hub import snapshot_download\n" if is_hub_id(model_id) else ""
    earthvl_code = (
        f"```python\n{download}from {FAMILIES[family].adapter_module} import load_adapter\n\n"
        f'model, processor = load_adapter({folder}, base="{base_shown}")\n```'
    )
    if vision:
        return (
            "A PEFT LoRA adapter whose base needs the vision-tower changes in `vision.json` (resolution or bands) "
            "before the adapter fits; earthvl applies them:\n\n" + earthvl_code
        )
    peft_code = (
        f"```python\nfrom peft import PeftModel\nfrom transformers import {', '.join(imports)}\n\n"
        f'base = {model_class}.from_pretrained("{base_shown}")\nmodel = PeftModel.from_pretrained(base, "{model_id}")\n'
        f'processor = {processor_class}.from_pretrained("{model_id}")\n```'
    )
    extra = ", which also applies the saved generation settings (`generation_config.json`)" if family == BLIP2.name else ""
    text = f"A PEFT LoRA adapter on `{base_shown}`:\n\n{peft_code}\n\nOr with earthvl{extra}:\n\n{earthvl_code}"
    if not is_hub_id(base):
        text += f"\n\nThe adapter was trained on `{base_shown}`, which is not a Hub id: load it from where you have it."
    return text


def _summary(family: str | None, adapter: bool, merged: bool, base: str | None) -> str:
    name = FAMILIES[family].display if family else "vision-language"
    trained = "fine-tuned with earthvl on remote-sensing image-text data"
    if adapter:
        what = f"A LoRA adapter (PEFT) for a {name} model, {trained}"
    elif merged:
        what = f"A {name} model {trained}: the LoRA adapter folded into its base, saved as a plain transformers model"
    else:
        what = f"A {name} model {trained} (full weights)"
    base_text = f"`{base}`" if base else "not recorded"
    if is_hub_id(base):
        base_text = f"[{base}](https://huggingface.co/{base})"
    command = f" (`earthvl train {family}`)" if family else ""
    return f"{what}. Weights are safetensors.\n\n- Base model: {base_text}\n- Family: {name}{command}"


def _training_data(folder: ModelFolder | None, datasets: Sequence[str]) -> str:
    lines = []
    for spec in datasets:
        hub = spec.split(":")[0]
        lines.append(f"- [{spec}](https://huggingface.co/datasets/{hub})" if is_hub_id(hub) else f"- `{spec}`")
    if not lines:
        lines.append("Not recorded in the output folder (`earthvl card --datasets ...` names them).")
    if folder is None:
        return "\n".join(lines)
    fit = folder.files.get("text_fit.json") or {}
    named = list(fit)  # short names (`gaia-default`), also those of the held-out losses `eval_<name>_loss`
    for entry in (folder.state or {}).get("log_history", []):
        named += [key[5:-5] for key in entry if re.fullmatch(r"eval_.+_loss", key)]
    if named and not datasets:
        shown = ", ".join(f"`{name}`" for name in dict.fromkeys(named))
        lines.append(f"The run's files name them by short name: {shown}.")
    if fit:
        lines.append("\nCaption length against the text tower (`text_fit.json`, measured before training):\n")
        lines.append("| dataset | captions measured | longer than the tower | captions cut |\n|---|---:|---:|---:|")
        for name, f in fit.items():
            shares = f"{100 * f.get('longer_than_limit', 0):.1f}% | {100 * f.get('texts_cut', 0):.1f}%"
            lines.append(f"| `{name}` | {f.get('texts', 0):,} | {shares} |")
    skipped = folder.files.get("skipped_images.json")
    if skipped:
        lines.append(f"\n{len(skipped):,} training rows were skipped for undecodable images (`skipped_images.json`).")
    lines.append("\nDataset sizes are not recorded in the output folder; see the datasets' cards.")
    return "\n".join(lines)


def _recipe(folder: ModelFolder | None, base: str | None, datasets: Sequence[str]) -> str:
    if folder is None:
        return "Not recorded: the card was rendered without the training output folder (`earthvl card --model_dir`)."
    files, recipe = folder.files, {}
    if base:
        recipe["model_name_or_path"] = display_name(base)
    if datasets:
        recipe["datasets"] = list(datasets)
    lora = files.get("adapter_config.json")
    if lora:
        targets = lora.get("target_modules")
        recipe.update(
            use_peft=True,
            lora_r=lora.get("r"),
            lora_alpha=lora.get("lora_alpha"),
            lora_dropout=lora.get("lora_dropout"),
            lora_target_modules=sorted(targets) if isinstance(targets, list) else targets,
            lora_modules_to_save=lora.get("modules_to_save"),
        )
    if "captioning.json" in files:
        recipe["prompt"] = files["captioning.json"].get("prompt")
        generation = files.get("generation_config.json") or {}
        recipe.update(num_beams=generation.get("num_beams"), max_new_tokens=generation.get("max_new_tokens"))
    vision = files.get("vision.json") or {}
    recipe.update(image_size=vision.get("image_size"), multispectral=True if vision.get("num_channels") else None)
    args = files.get("training_args.json") or {}
    recipe.update({key: args.get(key) for key in RECIPE_KEYS if args.get(key) not in (None, -1)})
    recipe = {key: value for key, value in recipe.items() if value is not None}
    sources = ", ".join(f"`{name}`" for name in files if name in RECIPE_SOURCES) or "no settings files"
    command = f"earthvl train {folder.family}" if folder.family else "earthvl train"
    text = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True).strip()
    return (
        f"Read back from the output folder ({sources}) in the form of an `{command} --config` recipe; options the "
        "folder does not record (caption scheme, dataset weights) are left out. All `TrainingArguments` are in "
        f"`training_args.json`.\n\n```yaml\n{text}\n```"
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


def _hardware(folder: ModelFolder | None) -> str:
    if folder is None:
        return "Not recorded: the card was rendered without the training output folder."
    args = folder.files.get("training_args.json") or {}
    log = (folder.state or {}).get("log_history", [])
    summary = {**next((e for e in reversed(log) if "train_runtime" in e), {}), **(folder.files.get(RESULTS_FILE) or {})}
    peaks = [e["gpu_peak_memory_gb"] for e in log if "gpu_peak_memory_gb" in e]
    lines = []
    if args.get("use_cpu"):
        lines.append("- Device: CPU")
    elif peaks:
        lines.append(f"- Device: GPU, peak memory {max(peaks):.1f} GB per process (training logs)")
    precision = "bf16 mixed precision" if args.get("bf16") else "fp16 mixed precision" if args.get("fp16") else "fp32"
    if args:
        lines.append(f"- Precision: {precision}")
    if "train_runtime" in summary:
        steps = f", {folder.state['global_step']:,} steps" if folder.state and folder.state.get("global_step") else ""
        lines.append(f"- Training time: {_duration(summary['train_runtime'])}{steps}")
    if "train_samples_per_second" in summary:
        lines.append(f"- Throughput: {summary['train_samples_per_second']:.1f} samples/s")
    if "train_runtime" not in summary:
        lines.append(
            f"- Training time: not recorded (the output folder has no `{STATE_FILE}` or `{RESULTS_FILE}` with the "
            "final training log)"
        )
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def reproduce_command(
    data: Mapping[str, Any], model_id: str, base: str | None = None, name: str = "results.json"
) -> str:
    """The `earthvl eval` command that computes `data` again for `model_id`."""
    task, dataset, settings = data["task"], data["dataset"], data["settings"]
    args = ["earthvl", "eval", task, "--model", model_id, "--dataset", dataset.get("name") or dataset["id"]]
    generation = settings.get("generation") or {}
    options: list[tuple[str, Any]] = [
        ("--config", dataset.get("config")),
        ("--split", dataset["split"]),
        ("--dataset_revision", dataset.get("revision")),
        ("--base_model", base if is_hub_id(base) else None),
        ("--max_samples", settings.get("max_samples")),
        ("--dtype", settings.get("dtype")),
    ]
    if task == "caption":
        options += [
            ("--protocols", list(data["metrics"])),
            ("--prompt", settings.get("prompt") or None),
            ("--num_beams", generation.get("num_beams")),
            ("--max_new_tokens", generation.get("max_new_tokens")),
        ]
    elif task == "classify" and "geochat" in data["metrics"]:
        options.append(("--max_new_tokens", generation.get("max_new_tokens")))
    elif task == "retrieve":
        options.append(("--long_text", settings.get("long_text")))
        if settings.get("long_text") == "chunks":
            options.append(("--max_text_chunks", settings.get("max_text_chunks")))
    for option, value in options:
        if value is not None:
            args += [option, *map(str, value)] if isinstance(value, list) else [option, str(value)]
    args += [flag for flag in ("--load_in_4bit", "--load_in_8bit") if settings.get(flag[2:])]
    return shlex.join([*args, "--out", f"{EVAL_DIR}/{name}"])


def _evaluation(r: Results, model_id: str, base: str | None) -> dict[str, str]:
    data, dataset = r.data, r.data["dataset"]
    where = ", ".join(str(p) for p in (dataset.get("config"), dataset["split"]) if p)
    details = [f"`{dataset['id']}` ({where})"]
    if dataset.get("num_samples") is not None:
        details.append(f"{dataset['num_samples']:,} samples")
    if dataset.get("revision"):
        details.append(f"revision `{dataset['revision']}`")
    settings = data["settings"]
    if settings.get("device"):
        dtype = f" ({settings['dtype']})" if settings.get("dtype") else ""
        details.append(f"{data['seconds']:.0f} s on {settings['device']}{dtype}")
    bad, failed = data["failures"].get("bad_images", 0), data["failures"].get("failed_generations", 0)
    if bad or failed:
        details.append(f"{bad} bad images skipped, {failed} failed generations")
    rows, notes = ["| metric | protocol | score (%) |", "|---|---|---:|"], []
    for protocol, values in data["metrics"].items():
        for metric, value in values.items():
            label = METRICS.get(metric, (None, metric))[1]
            rows.append(f"| {label} | {_protocol(protocol, metric)} | {_percent(value)} |")
            if value is None:
                why = "fewer than five classes" if metric == "acc5" else "undefined on this split"
                notes.append(f"{label} is n/a ({why}) and left out of the model-index.")
    return {
        "heading": f"{TASKS[data['task']][1]}: {dataset.get('name') or dataset['id']}",
        "details": "; ".join(details) + ".",
        "table": "\n".join(rows),
        "notes": " ".join(notes),
        "command": reproduce_command(data, model_id, base, r.name),
    }


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
    record."""
    loaded = load_results(results)
    folder = read_model_folder(model_dir, merged=merged) if model_dir is not None else None
    recorded = loaded[0].data["model"] if loaded else {}
    model_id = model_id or recorded.get("id") or (folder.path.resolve().name if folder else None)
    if not model_id:
        raise EarthvlError("nothing to describe: give results files or a model folder")
    family = recorded.get("family") or (folder.family if folder else None)
    if folder and folder.family and family != folder.family:
        raise EarthvlError(f"the results are of a {family} model but {folder.path} holds a {folder.family} model")
    base = base_model or recorded.get("base_model") or (folder.base_model if folder else None)
    base = display_name(base) if base else None
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
        summary=_summary(family, adapter, merged, base),
        usage=_usage(family, adapter, model_id, base, bool(folder and folder.files.get("vision.json"))),
        training_data=_training_data(folder, datasets),
        recipe=_recipe(folder, base, datasets),
        hardware=_hardware(folder),
        evaluations=[_evaluation(r, model_id, base if adapter else None) for r in loaded],
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


def copy_results(loaded: Sequence[Results], eval_dir: Path) -> None:
    """Write the results files into `eval_dir`; an error if it already holds other results (the card would not
    show them, yet `earthvl publish` would push them)."""
    others = sorted(p.name for p in eval_dir.glob("*.json") if p.name not in {r.name for r in loaded})
    if others:
        raise EarthvlError(
            f"{eval_dir} holds results this card does not show: {', '.join(others)}; remove them or add them "
            "with --results"
        )
    for r in loaded:
        write_bytes(eval_dir / r.name, r.content())
