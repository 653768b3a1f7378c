"""The Markdown of a model card's sections: summary, loading code, training data, recipe, hardware and one
evaluation table per results file."""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import yaml

from earthvl.cards.eval_command import reproduce_command
from earthvl.cards.hub_metrics import METRICS, TASKS, protocol_name
from earthvl.cards.model_folder import ModelFolder
from earthvl.cards.naming import display_name, is_hub_id
from earthvl.cards.results_files import Results
from earthvl.models.families import BLIP2, FAMILIES
from earthvl.training_output import (
    ADAPTER_CONFIG_FILE,
    CAPTIONING_FILE,
    GENERATION_CONFIG_FILE,
    RUN_FILE,
    SKIPPED_IMAGES_FILE,
    TEXT_FIT_FILE,
    TRAIN_RESULTS_FILE,
    TRAINER_STATE_FILE,
    TRAINING_ARGS_FILE,
    VISION_FILE,
)

RECIPE_KEYS = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
    "lr_scheduler_type", "warmup_steps", "warmup_ratio", "weight_decay", "optim", "bf16", "fp16",
    "activation_checkpointing", "gradient_checkpointing", "seed",
)  # fmt: skip
"""`TrainingArguments` fields a card's recipe shows (the rest stay in training_args.json)."""
RECIPE_SOURCES = (TRAINING_ARGS_FILE, ADAPTER_CONFIG_FILE, CAPTIONING_FILE, GENERATION_CONFIG_FILE, VISION_FILE)
"""The side files a card's recipe is read from."""


def usage(family: str | None, adapter: bool, model_id: str, base: str | None, vision: bool) -> str:
    """How to load the model: plain `from_pretrained`, `PeftModel` on its base, or earthvl's `load_adapter`."""
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


def summary(family: str | None, adapter: bool, merged: bool, base: str | None) -> str:
    """What the model is (adapter, merged or full weights), its base and family."""
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


def training_data(folder: ModelFolder | None, datasets: Sequence[str]) -> str:
    """The datasets, how captions fit the text tower, skipped rows, and each dataset's version and rows read."""
    lines = []
    for spec in datasets:
        hub = spec.split(":")[0]
        lines.append(f"- [{spec}](https://huggingface.co/datasets/{hub})" if is_hub_id(hub) else f"- `{spec}`")
    if not lines:
        lines.append("Not recorded in the output folder (`earthvl card --datasets ...` names them).")
    if folder is None:
        return "\n".join(lines)
    fit = folder.files.get(TEXT_FIT_FILE) or {}
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
    skipped = folder.files.get(SKIPPED_IMAGES_FILE)
    if skipped:
        lines.append(f"\n{len(skipped):,} training rows were skipped for undecodable images (`{SKIPPED_IMAGES_FILE}`).")
    recorded = folder.run.get("datasets") or []
    if not recorded:
        lines.append(f"\nDataset versions and sizes are not recorded in the output folder (no `{RUN_FILE}`).")
        return "\n".join(lines)
    lines.append(f"\nWhat the run read (`{RUN_FILE}`):\n")
    lines.append("| dataset | version | rows |\n|---|---|---|")
    for entry in recorded:
        rows = ", ".join(f"{split} {count:,}" for split, count in (entry.get("splits") or {}).items())
        lines.append(f"| `{entry.get('spec')}` | {_data_version(entry)} | {rows} |")
    return "\n".join(lines)


def _data_version(entry: Mapping[str, Any]) -> str:
    if entry.get("revision"):
        return f"commit `{entry['revision']}`"
    if entry.get("fingerprint"):
        built = f", built by {entry['built_by']}" if entry.get("built_by") else ""
        return f"local folder, fingerprint `{entry['fingerprint'][:16]}`{built}"
    return "not recorded"


def recipe(folder: ModelFolder | None, base: str | None, datasets: Sequence[str]) -> str:
    """The run's settings read back from the output folder, as an `earthvl train --config` recipe."""
    if folder is None:
        return "Not recorded: the card was rendered without the training output folder (`earthvl card --model_dir`)."
    files, recipe = folder.files, {}
    if base:
        recipe["model_name_or_path"] = display_name(base)
    if datasets:
        recipe["datasets"] = list(datasets)
    lora = files.get(ADAPTER_CONFIG_FILE)
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
    if CAPTIONING_FILE in files:
        recipe["prompt"] = files[CAPTIONING_FILE].get("prompt")
        generation = files.get(GENERATION_CONFIG_FILE) or {}
        recipe.update(num_beams=generation.get("num_beams"), max_new_tokens=generation.get("max_new_tokens"))
    vision = files.get(VISION_FILE) or {}
    recipe.update(image_size=vision.get("image_size"), multispectral=True if vision.get("num_channels") else None)
    args = files.get(TRAINING_ARGS_FILE) or {}
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


def hardware(folder: ModelFolder | None) -> str:
    """Device, precision, training time, throughput and the wall time of the run."""
    if folder is None:
        return "Not recorded: the card was rendered without the training output folder."
    args = folder.files.get(TRAINING_ARGS_FILE) or {}
    log = (folder.state or {}).get("log_history", [])
    summary = {**next((e for e in reversed(log) if "train_runtime" in e), {}), **(folder.files.get(TRAIN_RESULTS_FILE) or {})}
    peaks = [e["gpu_peak_memory_gb"] for e in log if "gpu_peak_memory_gb" in e]
    lines = []
    run = folder.run
    peak = f", peak memory {max(peaks):.1f} GB per process (training logs)" if peaks else ""
    if run.get("device"):
        processes = f" x {run['processes']} processes" if (run.get("processes") or 1) > 1 else ""
        device = "CPU" if run["device"] == "cpu" else run["device"]
        lines.append(f"- Device: {device}{processes}{peak}")
    elif args.get("use_cpu"):
        lines.append("- Device: CPU")
    elif peaks:
        lines.append(f"- Device: GPU{peak}")
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
            f"- Training time: not recorded (the output folder has no `{TRAINER_STATE_FILE}` or `{TRAIN_RESULTS_FILE}` "
            "with the final training log)"
        )
    if run.get("seconds") is not None:
        lines.append(f"- Wall time of the whole run (loading, training, saving): {_duration(run['seconds'])}")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def evaluation(r: Results, model_id: str, base: str | None) -> dict[str, str]:
    """One results file as the template's evaluation entry: heading, details, table, notes and the command."""
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
            rows.append(f"| {label} | {protocol_name(protocol, metric)} | {_percent(value)} |")
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
