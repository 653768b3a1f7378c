"""Spatio-temporally stratified splits: geohash, season, and split sizes overall and per stratum."""

import datetime
from collections import Counter, defaultdict

import numpy as np
import pytest

from earthvl.builders.stratified_splits import DEFAULT_FRACTIONS, MISSING, geohash, season, spatiotemporal_split, stratum
from earthvl.errors import EarthvlError


@pytest.mark.parametrize(
    ("lat", "lon", "precision", "expected"),
    [
        (57.64911, 10.40744, 11, "u4pruydqqvj"),
        (48.8566, 2.3522, 3, "u09"),
        (-33.8688, 151.2093, 5, "r3gx2"),
        (0.0, 0.0, 1, "s"),
        (-90.0, -180.0, 4, "0000"),
        (90.0, 180.0, 4, "zzzz"),
    ],
)
def test_geohash_known_values(lat, lon, precision, expected):
    assert geohash(lat, lon, precision) == expected


@pytest.mark.parametrize(
    ("lat", "lon", "precision"), [(91.0, 0.0, 3), (0.0, -181.0, 3), (float("nan"), 0.0, 3), (0.0, 0.0, 0), (0.0, 0.0, 13)]
)
def test_geohash_rejects_bad_input(lat, lon, precision):
    with pytest.raises(EarthvlError):
        geohash(lat, lon, precision)


def test_season_is_shifted_in_the_southern_hemisphere():
    assert season("2021-01-15", 48.9) == "winter"
    assert season("2021-01-15", -33.9) == "summer"
    assert season(datetime.datetime(2020, 7, 1, 12), -10.0) == "winter"
    assert season(datetime.date(2020, 4, 30), 10.0) == "spring"
    assert season("2020-10-02T08:30:00", -5.0) == "spring"
    assert season(datetime.date(2020, 12, 1), 0.0) == "winter"
    with pytest.raises(EarthvlError, match="'yesterday'"):
        season("yesterday", 10.0)


def test_stratum_of_rows_with_missing_values():
    assert stratum(48.8566, 2.3522, "2021-07-01") == ("u09", "summer")
    assert stratum(48.8566, 2.3522, None) == ("u09", MISSING)
    assert stratum(None, 2.3522, "2021-07-01") == (MISSING, MISSING)
    assert stratum(float("nan"), 2.3522, "2021-07-01") == (MISSING, MISSING)


def random_rows(seed, count=1000):
    rng = np.random.default_rng(seed)
    lats = rng.uniform(-60, 70, count)
    lons = rng.uniform(-180, 180, count)
    # a third of the rows in a few cells around Paris, so some strata are large
    clustered = count // 3
    lats[:clustered] = 48.85 + rng.normal(0, 0.3, clustered)
    lons[:clustered] = 2.35 + rng.normal(0, 0.3, clustered)
    dates = [datetime.date(2016, 1, 1) + datetime.timedelta(days=int(day)) for day in rng.integers(0, 3000, count)]
    return list(lats), list(lons), dates


def test_split_sizes_match_the_fractions():
    lats, lons, dates = random_rows(1)
    splits = spatiotemporal_split(lats, lons, dates)
    sizes = Counter(splits)
    assert set(sizes) == {"train", "validation", "test"}
    assert abs(sizes["train"] - 700) <= 1 and abs(sizes["validation"] - 100) <= 1 and abs(sizes["test"] - 200) <= 1
    strata = {stratum(*row) for row in zip(lats, lons, dates)}
    assert len(strata) > 400  # most strata hold one or two rows, yet the totals above are exact


def test_large_strata_are_split_by_the_fractions():
    lats, lons, dates = random_rows(2, count=3000)
    splits = spatiotemporal_split(lats, lons, dates, seed=5)
    by_stratum = defaultdict(list)
    for row, split in zip(zip(lats, lons, dates), splits):
        by_stratum[stratum(*row)].append(split)
    large = [members for members in by_stratum.values() if len(members) >= 50]
    assert len(large) >= 3
    for members in large:
        counts = Counter(members)
        for name, fraction in DEFAULT_FRACTIONS.items():
            assert abs(counts[name] / len(members) - fraction) <= 0.05


def test_split_is_deterministic_per_seed():
    lats, lons, dates = random_rows(3)
    first = spatiotemporal_split(lats, lons, dates, seed=7)
    assert spatiotemporal_split(lats, lons, dates, seed=7) == first
    other = spatiotemporal_split(lats, lons, dates, seed=8)
    assert sum(a != b for a, b in zip(first, other)) > 100
    assert Counter(other) == Counter(first)


def test_missing_values_and_custom_fractions():
    lats = [10.0, None, 20.0, float("nan")] * 25
    lons = [10.0, 5.0, 20.0, 5.0] * 25
    dates = ["2020-01-01", "2020-01-01", None, "2020-06-01"] * 25
    splits = spatiotemporal_split(lats, lons, dates, {"a": 0.5, "b": 0.5}, seed=1)
    assert Counter(splits) == {"a": 50, "b": 50}
    assert Counter(split for split, lat in zip(splits, lats) if lat != lat or lat is None) == {"a": 25, "b": 25}


@pytest.mark.parametrize(
    "fractions",
    [{"train": 0.7, "test": 0.2}, {"train": 0.8, "validation": 0.0, "test": 0.2}, {"train": 1.2, "test": -0.2}, {}],
)
def test_bad_fractions_are_errors(fractions):
    with pytest.raises(EarthvlError, match="fraction"):
        spatiotemporal_split([0.0], [0.0], ["2020-01-01"], fractions)


def test_bad_rows_are_errors():
    with pytest.raises(EarthvlError, match="same length"):
        spatiotemporal_split([0.0, 1.0], [0.0], ["2020-01-01"])
    with pytest.raises(EarthvlError, match="row 1.*'2020-13-01'"):
        spatiotemporal_split([0.0, 1.0], [0.0, 1.0], ["2020-01-01", "2020-13-01"])
