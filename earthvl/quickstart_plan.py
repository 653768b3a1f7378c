"""The plan of `earthvl quickstart`: its options, the steps they make (each an `earthvl` command, or the Space
folder), the before/after pairs of its summary and where its results go. `earthvl.quickstart.StepRunner` runs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from earthvl.errors import check_positive
from earthvl.eval_results import predictions_path
from earthvl.models.families import FAMILIES
from earthvl.quickstart import SAMPLE, SUMMARY_FILE, Evaluation, Step
from earthvl.sample import LABELS_DIR


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
    skipped: list[str] = field(default_factory=list)
    """Why a part of the job is left out (said before the steps run and in the final report)."""


def plan(args: QuickstartArguments) -> Plan:
    """The steps of a quickstart run, the before/after pairs of its summary and where its results go."""
    steps: list[Step] = []
    places: list[tuple[str, str]] = []
    sources = {"gaia": args.gaia_dataset, "chatearthnet": args.chatearthnet_dataset}
    from_sample = [name for name, source in sources.items() if source == SAMPLE]
    # The VLM's captions are scored against the land-cover maps of ChatEarthNet's test patches, which only the
    # sample world has (the upstream dataset ships none).
    label_maps = "{out}/sample/" + LABELS_DIR if "chatearthnet" in from_sample else None
    skipped = [] if label_maps else [
        f"faithfulness of the VLM's captions: --chatearthnet_dataset {args.chatearthnet_dataset} is not the sample "
        "world, the only source with land-cover maps of its test patches"
    ]
    if from_sample or args.classify_dataset == SAMPLE:
        steps.append(
            Step(
                "sample",
                f"sample world: {args.tiles} ChatEarthNet tiles, {args.gaia_images} GAIA scenes (seed {args.seed})",
                ["sample", "--out", "{out}/sample", "--tiles", str(args.tiles), "--gaia_images", str(args.gaia_images),
                 "--seed", str(args.seed), "--overwrite", *(["--label_maps"] if label_maps else [])],
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
        before_steps: list[Step] = []
        after_steps: list[Step] = []
        # steps scoring the evaluations' predictions: their files are not results a model card takes
        scoring: dict[str, list[Step]] = {"before": [], "after": []}
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
            if family == "vlm" and label_maps:
                evaluations.append(
                    _faithfulness_steps(model, display, label_maps, before_steps[-1], after_steps[-1], scoring)
                )
        recipe = recipe or FAMILIES[family].default_recipe(model)
        command = ["train", family, "--config", recipe, "--model_name_or_path", model, "--datasets", *datasets,
                   "--output_dir", run]
        if args.max_train_steps:
            command += ["--max_steps", str(args.max_train_steps)]
        steps += before_steps + scoring["before"]
        steps.append(Step(f"train {family}", f"{how} of {model} ({recipe})", command, (run,), reads=sum((dataset_steps[name] for name in names), ())))
        steps += after_steps + scoring["after"]
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
    if label_maps:
        places.append(("faithfulness", "{out}/eval/vlm-faithfulness-*.json  (per-caption scores in each)"))
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
    return Plan(steps, evaluations, places, skipped)


def _faithfulness_steps(
    model: str, display: str, label_maps: str, before: Step, after: Step, into: dict[str, list[Step]]
) -> Evaluation:
    """`earthvl eval faithfulness` of the predictions of the caption evaluations `before` and `after` (added to
    `into`; the predictions files join those steps' outputs), and their summary rows."""
    files = {when: f"eval/vlm-faithfulness-{when}.json" for when in ("before", "after")}
    for when, whose, caption in (("before", "the base", before), ("after", "the trained", after)):
        predictions = predictions_path(caption.outputs[0]).as_posix()
        caption.outputs += (predictions,)
        into[when].append(
            Step(
                f"eval vlm faithfulness {when}",
                f"score the captions of {whose} VLM against the land-cover maps of {display}",
                ["eval", "faithfulness", "--predictions", predictions, "--labels", label_maps, "--out", "{out}/" + files[when]],
                ("{out}/" + files[when],),
                reads=("sample", caption.name),
            )
        )
    return Evaluation("faithfulness", model, display, files["before"], files["after"])


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
