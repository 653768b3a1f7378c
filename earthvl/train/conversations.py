"""Turn image datasets into TRL's conversational VLM rows: captioning, and GeoChat-style classification and VQA.

A row becomes `{"messages": [user: image + instruction, assistant: answer], "images": [image]}`, what
`trl.SFTTrainer` and its `DataCollatorForVisionLanguageModeling` take. Rows are made on access (a `datasets`
transform), so one caption of a GAIA image is sampled per image per epoch and images are decoded only when a batch
needs them, under a pixel limit. Which task a dataset serves is read from its columns:

- `caption`: `captions` (a list, GAIA) or `caption` (ChatEarthNet); the instruction is drawn from the paraphrases.
- `classify`: `label` (a `ClassLabel`, or strings); GeoChat's prompt listing every class name.
- `vqa`: `question` and `answer`; the question with GeoChat's short-answer suffix.
"""

from __future__ import annotations

from typing import Any, Sequence

from datasets import ClassLabel, Dataset

from earthvl.builders.chatearthnet.features import BAND_COLUMNS, stack_bands
from earthvl.data import first_column
from earthvl.errors import EarthvlError
from earthvl.images import DEFAULT_MAX_PIXELS, open_image
from earthvl.prompts import CAPTION_INSTRUCTION, CAPTION_PARAPHRASES, classify_instruction, vqa_instruction
from earthvl.train.rows import BAD_IMAGE, RowTransform, prepare_rows

TASKS = ("caption", "classify", "vqa")
CAPTION_COLUMNS = ("captions", "caption")
"""A list of captions per image (GAIA), or one caption (ChatEarthNet)."""
LABEL_COLUMN = "label"
QUESTION_COLUMN, ANSWER_COLUMN = "question", "answer"
LENGTH_COLUMN = "length"
"""Words of instruction and answer per row: what length-grouped batching sorts by (image tokens are constant)."""


def chat_messages(instruction: str, answer: str | None = None) -> list[dict[str, Any]]:
    """A user turn with the image and `instruction`, followed by the assistant's `answer` when one is given."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def detect_task(dataset: Dataset) -> str:
    """The task a dataset's columns serve: `caption`, then `vqa`, then `classify`."""
    if first_column(dataset, CAPTION_COLUMNS):
        return "caption"
    if QUESTION_COLUMN in dataset.column_names and ANSWER_COLUMN in dataset.column_names:
        return "vqa"
    if LABEL_COLUMN in dataset.column_names:
        return "classify"
    raise EarthvlError(
        f"cannot tell what to train on: no caption column ({' or '.join(CAPTION_COLUMNS)}), no "
        f"'{QUESTION_COLUMN}' + '{ANSWER_COLUMN}' and no '{LABEL_COLUMN}' among {', '.join(dataset.column_names)}"
    )


class Conversations(RowTransform):
    """The transform behind `to_conversations`: decodes the images and writes the turns of a batch of rows.

    Captions and instructions are drawn from (seed, epoch, row key); call `set_epoch` at the start of each epoch
    (e.g. from a `TrainerCallback`) to draw new ones. A row whose image fails to decode comes out with
    `images=None` and the reason under `bad_image` when `on_bad_image="skip"`."""

    def __init__(
        self,
        name: str,
        task: str,
        key_column: str,
        answer_column: str,
        *,
        class_names: Sequence[str] | None = None,
        instructions: Sequence[str] = CAPTION_PARAPHRASES,
        bands: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(name, key_column, **options)
        self.task, self.answer_column = task, answer_column
        self.class_names = list(class_names) if class_names is not None else None
        self.instructions, self.bands = tuple(instructions), bands

    def turn(self, row: dict[str, Any]) -> tuple[str, str]:
        """(instruction, answer) of a row."""
        key, answer = row[self.key_column], row[self.answer_column]
        if self.task == "caption":
            caption = self.choose(key, answer, "caption") if isinstance(answer, list) else answer
            return self.choose(key, self.instructions, "instruction"), caption
        if self.task == "classify":
            label = self.class_names[answer] if isinstance(answer, int) else str(answer)
            return classify_instruction(self.class_names), label
        return vqa_instruction(row[QUESTION_COLUMN]), str(answer)

    def _open(self, row: dict[str, Any]) -> tuple[Any, Any]:
        image = open_image(row["image"], max_pixels=self.max_pixels)
        return image, stack_bands(row) if self.bands else None

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if "image" not in batch:  # a single column read, e.g. the sampler's `length`
            return batch
        out: dict[str, list[Any]] = {"messages": [], "images": [], BAD_IMAGE: []}
        if self.bands:
            out["bands"] = []
        for values in zip(*batch.values()):
            row = dict(zip(batch, values))
            instruction, answer = self.turn(row)
            out["messages"].append(chat_messages(instruction, answer))
            opened, problem = self.decode(row, self._open)
            image, bands = opened or (None, None)
            out["images"].append([image] if image is not None else None)
            out[BAD_IMAGE].append(problem)
            if self.bands:
                out["bands"].append(bands)
        return out


def _words(value: Any) -> float:
    if isinstance(value, list):
        return sum(_words(item) for item in value) / max(len(value), 1)
    return len(str(value).split())


def to_conversations(
    dataset: Dataset,
    *,
    name: str = "dataset",
    task: str = "auto",
    seed: int = 0,
    paraphrase: bool = True,
    bands: bool = False,
    on_bad_image: str = "stop",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[Dataset, Conversations]:
    """`dataset` as TRL conversational rows with a `length` column, and the transform (`set_epoch` re-draws).

    `task` is `caption`, `classify`, `vqa` or `auto` (from the columns). Rows without an answer cannot train: they
    are left out, and their count is logged. With `paraphrase` off every caption row uses the evaluation instruction
    "Provide a detailed description of the given image." With `bands` each row also carries its nine Sentinel-2
    bands as a (9, H, W) uint8 array (ChatEarthNet's `-multispectral` configs)."""
    task = detect_task(dataset) if task == "auto" else task
    if task not in TASKS:
        raise EarthvlError(f"task={task!r} for {name}: choose one of auto, {', '.join(TASKS)}")
    answer_column = {"caption": first_column(dataset, CAPTION_COLUMNS), "classify": LABEL_COLUMN, "vqa": ANSWER_COLUMN}[task]
    needed = [answer_column] + ([QUESTION_COLUMN] if task == "vqa" else [])
    missing = [column for column in needed if column is None or column not in dataset.column_names]
    if missing:
        wanted = " or ".join(CAPTION_COLUMNS) if task == "caption" else ", ".join(needed)
        raise EarthvlError(f"{name} cannot train task {task!r}: it needs {wanted}; its columns are {', '.join(dataset.column_names)}")
    if bands:
        lacking = [column for column in BAND_COLUMNS.values() if column not in dataset.column_names]
        if lacking:
            raise EarthvlError(
                f"bands requested but {name} lacks the band columns {', '.join(lacking)}: train multispectral on "
                "ChatEarthNet's '-multispectral' configs only"
            )
    class_names = None
    if task == "classify":
        feature = dataset.features[LABEL_COLUMN]
        class_names = feature.names if isinstance(feature, ClassLabel) else sorted(set(map(str, dataset[LABEL_COLUMN])))
    kept, key_column = prepare_rows(
        dataset, name=name, answer_column=answer_column, image_columns=["image", *(BAND_COLUMNS.values() if bands else [])]
    )
    transform = Conversations(
        name,
        task,
        key_column,
        answer_column,
        class_names=class_names,
        seed=seed,
        instructions=CAPTION_PARAPHRASES if paraphrase else (CAPTION_INSTRUCTION,),
        bands=bands,
        on_bad_image=on_bad_image,
        max_pixels=max_pixels,
    )
    texts = kept.with_format("arrow")
    answers = texts[answer_column].to_pylist()
    questions = texts[QUESTION_COLUMN].to_pylist() if task == "vqa" else [""] * len(answers)
    instruction_words = _words(classify_instruction(class_names) if class_names else CAPTION_INSTRUCTION)
    lengths = [round(instruction_words + _words(answer) + _words(question)) for answer, question in zip(answers, questions)]
    if LENGTH_COLUMN in kept.column_names:
        kept = kept.remove_columns(LENGTH_COLUMN)
    kept = kept.add_column(LENGTH_COLUMN, lengths)
    return kept.with_transform(transform), transform
