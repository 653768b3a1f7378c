"""The plan of `earthvl quickstart`: its options, the steps they make (each an `earthvl` command, or the Space
folder), the before/after pairs of its summary and where its results go. `earthvl.quickstart.StepRunner` runs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from earthvl.errors import check_positive
from earthvl.models.families import FAMILIES
from earthvl.quickstart import SAMPLE, SUMMARY_FILE, Evaluation, Step


@dataclass
class QuickstartArguments:
    """Options of `earthvl quickstart`."""

    out: str = field(default="quickstart", metadata={"help": "Folder for everything the run writes."})
    gaia_dataset: str = field(
        default=SAMPLE,
        metadata={
            "help": "GAIA: a Hub id or built folder (config `default`), or `sample` to build it from the offline "
            "sample world."
        },
    )
    chatearthnet_dataset: str = field(
        default=SAMPLE,
        metadata={
            "help": "ChatEarthNet: a Hub id or built folder (config `gpt35`), or `sample` to build it from the "
            "offline sample world."
        },
    )
    classify_dataset: str = field(
        default=SAMPLE,
        metadata={
            "help": "Zero-shot classification benchmark of `earthvl eval classify` (e.g. eurosat, resisc45), or "
            "`sample` for the sample world's scenes/ (test patches by dominant land cover)."
        },
    )
    vlm_model: str = field(default=FAMILIES["vlm"].tiny_model, metadata={"help": "LLaVA-style model to instruction-tune."})
    clip_model: str = field(default=FAMILIES["clip"].tiny_model, metadata={"help": "CLIP model to fine-tune."})
    blip2_model: str = field(default=FAMILIES["blip2"].tiny_model, metadata={"help": "BLIP-2 model to fine-tune."})
    vlm_recipe: str | None = field(
        default=None, metadata={"help": "Recipe of `earthvl train vlm` (default: vlm/tiny for tiny-llava, else vlm/geochat)."}
    )
    clip_recipe: str | None = field(
        default=None, metadata={"help": "Recipe of `earthvl train clip` (default: clip/tiny for tiny-clip, else clip/gaia)."}
    )
    blip2_recipe: str | None = field(
        default=None,
        metadata={"help": "Recipe of `earthvl train blip2` (default: blip2/tiny for tiny-blip2, else blip2/gaia)."},
    )
    max_train_steps: int | None = field(
        default=None, metadata={"help": "Cap on optimizer steps per training run (default: the recipes' epochs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate only the first N rows of each benchmark (default: all)."}
    )
    tiles: int = field(default=64, metadata={"help": "Sample world: ChatEarthNet tiles (four patches each)."})
    gaia_images: int = field(default=160, metadata={"help": "Sample world: GAIA scenes."})
    seed: int = field(default=0, metadata={"help": "Seed of the sample world."})
    force: bool = field(default=False, metadata={"help": "Redo every step instead of reusing finished ones."})

    def __post_init__(self) -> None:
        check_positive(self, "tiles", "gaia_images", "max_train_steps", "max_eval_samples")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more, got {self.seed}")


TRAIN_CONFIGS = {"chatearthnet": "gpt35", "gaia": "default"}
"""The config of each dataset that is built and trained on (ChatEarthNet's GPT-3.5 captions cover every patch)."""


@dataclass
class Plan:
    steps: list[Step]
    evaluations: list[Evaluation]
    places: list[tuple[str, str]]
    """(what, where) lines of the final report, with `{out}`."""


def plan(args: QuickstartArguments) -> Plan:
    """The steps of a quickstart run, the before/after pairs of its summary and where its results go."""
    steps: list[Step] = []
    places: list[tuple[str, str]] = []
    sources = {"gaia": args.gaia_dataset, "chatearthnet": args.chatearthnet_dataset}
    from_sample = [name for name, source in sources.items() if source == SAMPLE]
    if from_sample or args.classify_dataset == SAMPLE:
        steps.append(
            Step(
                "sample",
                f"sample world: {args.tiles} ChatEarthNet tiles, {args.gaia_images} GAIA scenes (seed {args.seed})",
                ["sample", "--out", "{out}/sample", "--tiles", str(args.tiles), "--gaia_images", str(args.gaia_images),
                 "--seed", str(args.seed), "--overwrite"],
                ("{out}/sample",),
            )
        )
        places.append(("sample world", "{out}/sample"))
    build_options = {"chatearthnet": ["--configs", TRAIN_CONFIGS["chatearthnet"]], "gaia": []}
    for name in from_sample:
        sources[name] = "{out}/datasets/" + name
        steps.append(
            Step(
                f"build {name}",
                f"build {name} from the sample world",
                ["build", name, "--source", "{out}/sample/" + name, "--out", sources[name], *build_options[name], "--quiet"],
                (sources[name],),
                reads=("sample",),
            )
        )
    if from_sample:
        places.append(("datasets", f"{{out}}/datasets/ ({', '.join(from_sample)})"))
    dataset_steps = {name: (f"build {name}",) if name in from_sample else () for name in sources}
    test_sets = {
        # dataset -> (eval --dataset, display name, steps it reads)
        name: (f"{name}:{sources[name]}", f"{name} (sample) test" if name in from_sample else f"{sources[name]} test",
               dataset_steps[name])
        for name in sources
    }
    if args.classify_dataset == SAMPLE:
        test_sets["scenes"] = ("{out}/sample/scenes", "scenes (sample)", ("sample",))
    else:
        test_sets["scenes"] = (args.classify_dataset, args.classify_dataset, ())
    benchmarks = {
        # family -> task -> what it is evaluated on
        "vlm": {"caption": test_sets["chatearthnet"]},
        "clip": {"classify": test_sets["scenes"], "retrieve": test_sets["gaia"]},
        "blip2": {"caption": test_sets["gaia"]},
    }
    training = {
        # family -> (model, recipe, datasets it trains on, what the training is)
        "vlm": (args.vlm_model, args.vlm_recipe, ("chatearthnet",), "QLoRA instruction tuning"),
        "clip": (args.clip_model, args.clip_recipe, ("chatearthnet", "gaia"), "contrastive fine-tuning"),
        "blip2": (args.blip2_model, args.blip2_recipe, ("gaia",), "LoRA caption fine-tuning"),
    }
    evaluations: list[Evaluation] = []
    for family, (model, recipe, names, how) in training.items():
        datasets = [f"{sources[name]}:{TRAIN_CONFIGS[name]}" for name in names]
        run = f"{{out}}/runs/{family}"
        before_steps, after_steps = [], []
        for task, (dataset, display, reads) in benchmarks[family].items():
            files = {when: f"eval/{family}-{task}-{when}.json" for when in ("before", "after")}
            for when, evaluated, extra_reads, into in (
                ("before", model, (), before_steps),
                ("after", run, (f"train {family}",), after_steps),
            ):
                command = ["eval", task, "--model", evaluated, "--dataset", dataset, "--out", "{out}/" + files[when]]
                if task == "caption":
                    command += ["--protocols", "coco"]
                if args.max_eval_samples:
                    command += ["--max_samples", str(args.max_eval_samples)]
                whose = "the base" if when == "before" else "the trained"
                into.append(
                    Step(
                        f"eval {family} {task} {when}",
                        f"evaluate {whose} {family.upper()} ({task}) on {display}",
                        command,
                        ("{out}/" + files[when],),
                        reads=reads + extra_reads,
                    )
                )
            evaluations.append(Evaluation(task, model, display, files["before"], files["after"]))
        recipe = recipe or FAMILIES[family].default_recipe(model)
        command = ["train", family, "--config", recipe, "--model_name_or_path", model, "--datasets", *datasets,
                   "--output_dir", run]
        if args.max_train_steps:
            command += ["--max_steps", str(args.max_train_steps)]
        steps += before_steps
        steps.append(Step(f"train {family}", f"{how} of {model} ({recipe})", command, (run,), reads=sum((dataset_steps[name] for name in names), ())))
        steps += after_steps
        steps.append(
            Step(
                f"card {family}",
                f"model card of the trained {family.upper()}",
                ["card", "--model_dir", run, "--results", *(step.outputs[0] for step in after_steps), "--datasets", *datasets],
                (f"{run}/README.md", f"{run}/eval"),
                reads=(f"train {family}", *(step.name for step in after_steps)),
            )
        )
    places.append(("trained models", "{out}/runs/ (vlm, clip, blip2; each with its model card, README.md)"))
    places.append(("evaluations", "{out}/eval/*.json  (predictions beside each)"))
    gallery = sources["gaia"]
    steps.append(
        Step(
            "space",
            "Space folder: Gradio demo with the trained VLM and CLIP and a gallery of GAIA test images",
            None,
            ("{out}/space",),
            reads=("train vlm", "train clip", *dataset_steps["gaia"]),
            action=lambda out: _write_space(out, gallery),
            settings={"gallery": gallery},
        )
    )
    places.append(("Space", "{out}/space  (try: python {out}/space/app.py; push: earthvl publish {out}/space --space ORG/NAME)"))
    places.append(("summary", "{out}/" + SUMMARY_FILE))
    return Plan(steps, evaluations, places)


def _write_space(out: Path, gallery: str) -> None:
    from earthvl.space.folder import write_space

    write_space(
        out / "space",
        vlm_model=out / "runs" / "vlm",
        clip_model=out / "runs" / "clip",
        gallery_source=gallery.format(out=out),
        gallery_config="default",
        gallery_split="test",
    )
