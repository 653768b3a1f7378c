"""The options of `earthvl eval caption|classify|retrieve`: one dataclass shared by the three tasks and one per task."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from earthvl.errors import check_positive
from earthvl.images import max_pixels_option, on_bad_image_option
from earthvl.models.clip import long_text_option, max_text_chunks_option


@dataclass
class EvalArguments:
    """What to evaluate, on what, and where the results go."""

    model: str = field(
        metadata={"help": "Hub id, local folder (a trained earthvl output, adapters included) or tiny model name."}
    )
    dataset: str = field(
        metadata={
            "help": "Short name (eurosat, resisc45, ucmerced, aid, imagenet1k, gaia, chatearthnet), Hub dataset id, "
            "local folder (a built earthvl dataset, or one sub-folder of images per class), or NAME:SOURCE to run a "
            "known benchmark from a mirror (e.g. eurosat:/data/eurosat)."
        }
    )
    out: str = field(default="results.json", metadata={"help": "Results file to write (JSON)."})
    dataset_config: str | None = field(
        default=None, metadata={"help": "Dataset config (default: the known benchmark's, or the dataset's default)."}
    )
    split: str | None = field(default=None, metadata={"help": "Split to evaluate (default: the known one, else test)."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Dataset revision (branch, tag or commit) on the Hub."})
    revision: str | None = field(default=None, metadata={"help": "Model revision (branch, tag or commit) on the Hub."})
    base_model: str | None = field(
        default=None, metadata={"help": "Base model of an adapter (default: the one its adapter_config.json names)."}
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: detected)."})
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N rows (smoke runs)."})
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Images per batch (default: 256 for CLIP; for LLaVA on a GPU as many as its generation's KV cache "
            "fits in 80% of the free memory; else 16)."
        },
    )
    num_workers: int = field(default=2, metadata={"help": "DataLoader workers decoding images (0: in the main process)."})
    device: str | None = field(default=None, metadata={"help": "Device (default: cuda if available, else cpu)."})
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "Weights dtype (default: bfloat16 on a GPU, float32 on the CPU).",
            "choices": ["float32", "bfloat16", "float16"],
        },
    )
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the language model in 4-bit (BLIP-2, LLaVA)."})
    load_in_8bit: bool = field(default=False, metadata={"help": "Load the language model in 8-bit (BLIP-2, LLaVA)."})
    on_bad_image: str = on_bad_image_option("skip", "counted and listed in the results file")
    max_pixels: int = max_pixels_option()
    save_predictions: bool = field(
        default=True, metadata={"help": "Also write each row's prediction to <out stem>.predictions.jsonl."}
    )

    def __post_init__(self) -> None:
        check_positive(self, "max_samples", "batch_size", "max_pixels")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {self.num_workers}")
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit are both set: choose one")


@dataclass
class CaptionArguments:
    """Captioning: the prompt, generation settings and scoring protocols."""

    caption_column: str | None = field(default=None, metadata={"help": "Reference caption column (default: detected)."})
    protocols: list[str] = field(
        default_factory=lambda: ["coco", "hf"],
        metadata={"help": "Scoring protocols: coco (COCO caption toolkit) and/or hf (HF evaluate style, as GAIA reports)."},
    )
    prompt: str | None = field(
        default=None,
        metadata={
            "help": "Instruction (default: 'Provide a detailed description of the given image.' for LLaVA; for "
            "BLIP-2 the prompt its training saved, else none)."
        },
    )
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "Most tokens generated (default: 256 for LLaVA, the model's setting for BLIP-2)."}
    )
    num_beams: int | None = field(default=None, metadata={"help": "Beams (default: greedy for LLaVA, the model's setting for BLIP-2)."})

    def __post_init__(self) -> None:
        check_positive(self, "max_new_tokens", "num_beams")


@dataclass
class ClassifyArguments:
    """Zero-shot classification: labels, class names and prompts."""

    label_column: str | None = field(default=None, metadata={"help": "Label column (default: detected)."})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "Class names in label order (default: the benchmark's, or the label names)."}
    )
    templates: list[str] | None = field(
        default=None, metadata={"help": "CLIP prompt templates with {c} for the class name (default: the benchmark's)."}
    )
    max_new_tokens: int = field(default=16, metadata={"help": "Most tokens a VLM may answer with."})

    def __post_init__(self) -> None:
        check_positive(self, "max_new_tokens")


@dataclass
class RetrieveArguments:
    """Image-text retrieval: captions and how long ones are fitted to the text tower."""

    caption_column: str | None = field(default=None, metadata={"help": "Caption column (default: detected)."})
    long_text: str = long_text_option("truncate")
    max_text_chunks: int = max_text_chunks_option()

    def __post_init__(self) -> None:
        check_positive(self, "max_text_chunks")


TASK_ARGUMENTS = {"caption": CaptionArguments, "classify": ClassifyArguments, "retrieve": RetrieveArguments}
"""Task -> its options' dataclass (besides `EvalArguments`)."""


def option_flags(options: Any) -> list[str]:
    """The command-line options that give a dataclass of options its values: one `--name value...` per field whose
    value differs from its default, in field order (booleans as `--name` or `--name false`)."""
    flags: list[str] = []
    for spec in fields(options):
        value = getattr(options, spec.name)
        default = spec.default_factory() if spec.default_factory is not MISSING else spec.default
        if value == default:
            continue
        if isinstance(value, bool):
            flags += [f"--{spec.name}"] if value else [f"--{spec.name}", "false"]
        elif isinstance(value, (list, tuple)):
            flags += [f"--{spec.name}", *map(str, value)]
        else:
            flags += [f"--{spec.name}", str(value)]
    return flags
