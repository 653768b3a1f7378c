"""Spatio-temporally stratified splits, as GAIA's: strata are geohash cells (precision 3, ~156 km) x season."""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence

import numpy as np

from earthvl.builders.gaia.layout import SPLIT_FRACTIONS
from earthvl.errors import EarthvlError

DEFAULT_FRACTIONS: Mapping[str, float] = SPLIT_FRACTIONS
"""GAIA's 70/10/20 train/validation/test fractions."""

GEOHASH_ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
MAX_GEOHASH_PRECISION = 12
SEASONS = ("winter", "spring", "summer", "autumn")
"""Meteorological seasons, starting with December-January-February in the northern hemisphere."""
MISSING = "unknown"
"""Stratum component of a row whose coordinates (cell and season) or date (season) are missing."""


def geohash(lat: float, lon: float, precision: int = 3) -> str:
    """The standard base-32 geohash of a point, `precision` characters long (3 -> cells of about 156 km)."""
    if not isinstance(precision, int) or not 1 <= precision <= MAX_GEOHASH_PRECISION:
        raise EarthvlError(f"geohash precision must be an integer from 1 to {MAX_GEOHASH_PRECISION}, got {precision!r}")
    _check_coordinates(lat, lon)
    bounds = {"lat": [-90.0, 90.0], "lon": [-180.0, 180.0]}
    value = {"lat": float(lat), "lon": float(lon)}
    characters = []
    bits = 0
    for bit in range(precision * 5):
        axis = "lon" if bit % 2 == 0 else "lat"  # bits interleave, starting with longitude
        low, high = bounds[axis]
        middle = (low + high) / 2
        upper = value[axis] >= middle
        bounds[axis] = [middle, high] if upper else [low, middle]
        bits = bits << 1 | upper
        if bit % 5 == 4:
            characters.append(GEOHASH_ALPHABET[bits])
            bits = 0
    return "".join(characters)


def _check_latitude(lat: float) -> None:
    if not -90 <= lat <= 90:  # also false for NaN
        raise EarthvlError(f"latitude must be in [-90, 90], got {lat!r}")


def _check_coordinates(lat: float, lon: float) -> None:
    _check_latitude(lat)
    if not -180 <= lon <= 180:
        raise EarthvlError(f"longitude must be in [-180, 180], got {lon!r}")


def _date(value: datetime.date | datetime.datetime | str) -> datetime.date:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.datetime.fromisoformat(value.strip()).date()
        except ValueError:
            pass
    raise EarthvlError(f"date must be a datetime.date, datetime.datetime or ISO 8601 string, got {value!r}")


def season(date: datetime.date | datetime.datetime | str, lat: float) -> str:
    """Meteorological season of an acquisition: "winter" (DJF), "spring" (MAM), "summer" (JJA) or "autumn" (SON).

    South of the equator the months are shifted by six, so that a label means the same season everywhere
    (a January scene in Australia is "summer"). `date` may be an ISO 8601 string.
    """
    month = _date(date).month
    _check_latitude(lat)
    if lat < 0:
        month = (month + 5) % 12 + 1
    return SEASONS[month % 12 // 3]


def _missing(value: object) -> bool:
    return value is None or value == "" or value != value  # NaN and pandas' NaT are unequal to themselves


def stratum(lat: float | None, lon: float | None, date: object, precision: int = 3) -> tuple[str, str]:
    """A row's (geohash cell, season) stratum.

    A missing (None, NaN or "") coordinate gives `(MISSING, MISSING)`, since the season needs the hemisphere;
    a missing date with coordinates gives `(cell, MISSING)`.
    """
    if _missing(lat) or _missing(lon):
        return MISSING, MISSING
    cell = geohash(lat, lon, precision)
    return cell, MISSING if _missing(date) else season(date, lat)


def _checked_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """`fractions` validated and rescaled to sum to exactly 1."""
    if not fractions:
        raise EarthvlError("fractions must name at least one split")
    for name, fraction in fractions.items():
        if not fraction > 0:
            raise EarthvlError(f"fraction of split {name!r} must be positive, got {fraction!r}")
    total = sum(fractions.values())
    if abs(total - 1) > 1e-6:
        raise EarthvlError(f"split fractions must sum to 1, got {total} from {dict(fractions)}")
    return {name: fraction / total for name, fraction in fractions.items()}


def _largest_remainder(count: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Split sizes summing to `count`, each within 1 of `count * fraction` (ties go to the earlier split)."""
    quotas = {name: count * fraction for name, fraction in fractions.items()}
    sizes = {name: math.floor(quota) for name, quota in quotas.items()}
    by_remainder = sorted(quotas, key=lambda name: sizes[name] - quotas[name])
    for name in by_remainder[: count - sum(sizes.values())]:
        sizes[name] += 1
    return sizes


def spatiotemporal_split(
    lats: Sequence[float | None],
    lons: Sequence[float | None],
    dates: Sequence[object],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    *,
    precision: int = 3,
    seed: int = 0,
) -> list[str]:
    """A split name per row, stratified by `stratum` (geohash cell x season) and deterministic for a `seed`.

    Strata are visited in a seeded random order and the rows of each in a seeded shuffle; along that sequence each
    row goes to the split furthest behind its share so far (among splits still below their total). Remainders so
    carry across strata: the split sizes are the largest-remainder sizes (within 1 of `len(lats) * fraction`) even
    when most strata hold one or two rows, and every split's count in a stratum is within about 2 of its share.
    """
    if not len(lats) == len(lons) == len(dates):
        lengths = f"{len(lats)}, {len(lons)}, {len(dates)}"
        raise EarthvlError(f"lats, lons and dates must have the same length, got {lengths}")
    fractions = _checked_fractions(fractions)
    strata: dict[tuple[str, str], list[int]] = {}
    for index, row in enumerate(zip(lats, lons, dates)):
        try:
            key = stratum(*row, precision=precision)
        except EarthvlError as error:
            raise EarthvlError(f"row {index}: {error}") from None
        strata.setdefault(key, []).append(index)

    rng = np.random.default_rng(seed)
    keys = sorted(strata)
    order = [index for position in rng.permutation(len(keys)) for index in rng.permutation(strata[keys[position]])]

    names = list(fractions)
    shares = np.array([fractions[name] for name in names])
    totals = np.array([_largest_remainder(len(order), fractions)[name] for name in names])
    assigned = np.zeros(len(names), dtype=np.int64)
    splits = [""] * len(order)
    for position, index in enumerate(order, start=1):
        deficit = np.where(assigned < totals, position * shares - assigned, -np.inf)
        chosen = int(np.argmax(deficit))
        assigned[chosen] += 1
        splits[index] = names[chosen]
    return splits
