"""Deterministic split assignment by fractions."""

from __future__ import annotations

import numpy as np


def split_counts(count: int, fractions: dict[str, float]) -> dict[str, int]:
    """Items per split for `fractions`, rounding the smaller splits and giving the rest to the first."""
    names = list(fractions)
    sizes = {name: max(1, round(count * fractions[name])) for name in names[1:]}
    sizes[names[0]] = count - sum(sizes.values())
    if sizes[names[0]] < 1:
        raise ValueError(f"{count} items cannot fill the {len(names)} splits {names}")
    return {name: sizes[name] for name in names}


def assign_splits(rng: np.random.Generator, count: int, fractions: dict[str, float]) -> list[str]:
    """A shuffled split name per item with sizes from `split_counts`."""
    splits = [name for name, size in split_counts(count, fractions).items() for _ in range(size)]
    return [splits[i] for i in rng.permutation(count)]
