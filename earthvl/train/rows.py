"""What every training-row transform shares: a stable key per row, seeded per-epoch choices, lazy image cells, and
one bad-image policy.

Rows are made on access (a `datasets` transform), so images are decoded only when a batch needs them (in DataLoader
workers when there are any), and a choice such as which of GAIA's five captions to use is drawn from (seed, epoch,
row key): the same run always sees the same rows, and `set_epoch` draws new ones.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Callable, Sequence, TypeVar

from datasets import Dataset
from datasets import Image as ImageFeature

from earthvl.data import KEY_COLUMNS, first_column
from earthvl.errors import EarthvlError
from earthvl.images import DEFAULT_MAX_PIXELS, ON_BAD_IMAGE, PIL_ERRORS, BadImage

logger = logging.getLogger(__name__)

ROW_COLUMN = "_row"
BAD_IMAGE = "bad_image"
"""Row key holding why a row's image could not be used (None when it could)."""

_T = TypeVar("_T")


class RowTransform:
    """Base of the row transforms: per-epoch seeded choices and the bad-image policy.

    An image that fails to decode (or is over `max_pixels`) stops training with the dataset and row named
    (`on_bad_image="stop"`), or ("skip") the row carries the reason under `bad_image` for the collator to drop and
    count."""

    def __init__(
        self,
        name: str,
        key_column: str,
        *,
        seed: int = 0,
        on_bad_image: str = "stop",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if on_bad_image not in ON_BAD_IMAGE:
            raise EarthvlError(f"on_bad_image={on_bad_image!r}: choose one of {', '.join(ON_BAD_IMAGE)}")
        self.name, self.key_column = name, key_column
        self.seed, self.epoch = seed, 0
        self.on_bad_image, self.max_pixels = on_bad_image, max_pixels

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def choose(self, key: Any, options: Sequence[_T], salt: str) -> _T:
        """One of `options`, the same for a (seed, epoch, salt, key) and drawn anew each epoch."""
        return options[random.Random(f"{self.seed}:{self.epoch}:{salt}:{key}").randrange(len(options))]

    def decode(self, row: dict[str, Any], open_row: Callable[[dict[str, Any]], _T]) -> tuple[_T | None, str | None]:
        """`open_row(row)` and no problem, or (with `skip`) None and the reason, naming the dataset and row."""
        try:
            return open_row(row), None
        except (BadImage, *PIL_ERRORS) as error:  # PIL_ERRORS: e.g. an extra band's PNG
            where = f"{self.name} row {self.key_column}={row[self.key_column]!r}"
            if self.on_bad_image == "stop":
                raise BadImage(f"{where}: {error} (--on_bad_image skip skips and counts such rows)") from error
            return None, f"{where}: {error}"


def prepare_rows(dataset: Dataset, *, name: str, answer_column: str, image_columns: Sequence[str] = ("image",)) -> tuple[Dataset, str]:
    """`dataset` without the rows whose `answer_column` is empty (their count logged), with lazy image cells, and the
    name of its key column (`_row`, the row number, is added when no column names rows)."""
    if "image" not in dataset.column_names:
        raise EarthvlError(
            f"{name} has no 'image' column (columns: {', '.join(dataset.column_names)}): load a config with pixels, "
            "e.g. GAIA 'default'"
        )
    kept = dataset.filter(lambda answer: answer is not None and answer != [] and answer != "", input_columns=answer_column)
    if len(kept) < len(dataset):
        logger.warning("%s: left out %d of %d rows that have no %s", name, len(dataset) - len(kept), len(dataset), answer_column)
    key_column = first_column(kept, KEY_COLUMNS)
    if key_column is None:
        kept, key_column = kept.add_column(ROW_COLUMN, list(range(len(kept)))), ROW_COLUMN
    for column in image_columns:
        kept = kept.cast_column(column, ImageFeature(decode=False))
    return kept, key_column
