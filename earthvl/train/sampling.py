"""Length-grouped batches that read a precomputed `length` column and reshuffle by (seed, epoch) alone.

transformers' `group_by_length` reads lengths row by row through the dataset's transform, which for earthvl's
lazily decoded rows would decode every image before training starts, and it draws its shuffle from the global RNG,
so a resumed run would not see the original order of later epochs."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers.trainer_pt_utils import LengthGroupedSampler

from earthvl.train.conversations import LENGTH_COLUMN


class EpochLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose megabatch shuffle is seeded with `seed + epoch` (the trainer calls `set_epoch`)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class LengthGrouping:
    """Mixin for a `transformers.Trainer` subclass: `train_sampling_strategy="group_by_length"` on a `length` column
    uses `EpochLengthGroupedSampler`; everything else is the trainer's own sampler."""

    def _get_train_sampler(self, train_dataset: Dataset | None = None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if (
            self.args.train_sampling_strategy == "group_by_length"
            and isinstance(dataset, Dataset)
            and LENGTH_COLUMN in dataset.column_names
        ):
            lengths = dataset.with_format("arrow")[LENGTH_COLUMN].to_pylist()
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths, seed
            )
        return super()._get_train_sampler(train_dataset)
