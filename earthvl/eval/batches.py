"""Decoding a benchmark's images in batches, in DataLoader workers, with every undecodable image accounted for."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from earthvl.data import KEY_COLUMNS, first_column
from earthvl.errors import EarthvlError
from earthvl.images import ON_BAD_IMAGE, BadImage

logger = logging.getLogger(__name__)


@dataclass
class Failures:
    """Rows that could not be evaluated or whose generation failed, with why; written to the results file."""

    keys: list[Any] | None = None
    """Each row's stable name (its id or file name), to report failed rows by."""
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, rows: Dataset) -> Failures:
        """An empty record for `rows`, naming rows by their id or file name column where they have one."""
        column = first_column(rows, KEY_COLUMNS)
        return cls(keys=rows[column] if column else None)

    def key(self, row: int) -> Any:
        """Row `row`'s stable name, None where the rows have none."""
        return self.keys[row] if self.keys is not None else None

    def add(self, kind: str, row: int, reason: str) -> None:
        self.rows.append({"kind": kind, "row": row, "id": self.key(row), "reason": reason})
        logger.warning("%s: %s", self.where(row), reason)

    def where(self, row: int) -> str:
        key = self.key(row)
        return f"row {row}" + (f" ({key})" if key is not None else "")

    def count(self, kind: str) -> int:
        return sum(entry["kind"] == kind for entry in self.rows)

    def summary(self) -> dict[str, Any]:
        return {
            "bad_images": self.count("bad_image"),
            "failed_generations": self.count("failed_generation"),
            "rows": self.rows,
        }


def _stacked(batch: list[tuple[int, Any, str | None]]) -> tuple[list[tuple[int, Any, str | None]], torch.Tensor | None]:
    """A worker's batch with its decoded arrays stacked into one tensor there (the main thread only pins and copies
    it); the items keep their index and error, their image dropped."""
    arrays = [image for _, image, error in batch if error is None]
    return [(index, None, error) for index, _, error in batch], torch.from_numpy(np.stack(arrays)) if arrays else None


class _Decoding(torch.utils.data.Dataset):
    def __init__(self, rows: Dataset, column: str, decode: Callable[[Any], Any]) -> None:
        self.rows, self.column, self.decode = rows, column, decode

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        try:
            return index, self.decode(self.rows[index][self.column]), None
        except BadImage as error:
            return index, None, str(error)


def decoded_batches(
    rows: Dataset,
    column: str,
    decode: Callable[[Any], Any],
    *,
    batch_size: int,
    failures: Failures,
    on_bad_image: str = "skip",
    num_workers: int = 0,
    description: str = "images",
    stack: bool = False,
    pin_memory: bool = False,
) -> Iterator[tuple[list[int], list[Any] | torch.Tensor]]:
    """(row indices, decoded images) per batch of `rows[column]`, in order; each image through `decode` (which
    raises `BadImage` for an image it cannot use). A bad image stops the run with the row named, or with
    `on_bad_image="skip"` is left out of its batch and recorded in `failures`.

    With `stack` (for `decode`s that return numpy arrays of one shape) a batch's images come as one tensor, stacked
    in the worker that decoded them, and with `pin_memory` in page-locked memory, so that a non-blocking copy to the
    GPU overlaps its work."""
    if on_bad_image not in ON_BAD_IMAGE:
        raise EarthvlError(f"on_bad_image={on_bad_image!r}: choose one of {', '.join(ON_BAD_IMAGE)}")
    loader = torch.utils.data.DataLoader(
        _Decoding(rows.select_columns([column]), column, decode),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_stacked if stack else list,
        pin_memory=pin_memory,
    )
    with tqdm(total=len(rows), desc=description, unit="img", disable=None) as bar:
        for batch in loader:
            batch, stacked = batch if stack else (batch, None)
            indices, images = [], []
            for index, image, error in batch:
                if error is None:
                    indices.append(index)
                    images.append(image)
                    continue
                if on_bad_image == "stop":
                    raise EarthvlError(f"{failures.where(index)}: {error} (pass --on_bad_image skip to go on)")
                failures.add("bad_image", index, error)
            bar.update(len(batch))
            if indices:
                yield indices, stacked if stack else images
