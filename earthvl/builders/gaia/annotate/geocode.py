"""Step 5, geocode: the annotation's `location` to `lat`/`lon`. Pluggable: an offline gazetteer file, an online
geocoding service through geopy (Nominatim by default, any geopy service by name), both (the gazetteer first), or
none (then `lat`/`lon` stay null and the report says so). Coordinates given with a record are kept as they are."""

from __future__ import annotations

import csv
import json
import math
import unicodedata
from pathlib import Path
from typing import Any, Protocol

from earthvl import atomic
from earthvl.builders.gaia.annotate.records import Record
from earthvl.builders.gaia.annotate.report import AnnotationReport
from earthvl.errors import EarthvlError

STEP = "geocode"
CACHE_FILE = "geocode_cache.json"


class Geocoder(Protocol):
    name: str

    def locate(self, query: str) -> tuple[float, float] | None:
        """(lat, lon) of a place name, or None when it is not known; raises `GeocodingError` when the service fails."""


class GeocodingError(Exception):
    """The geocoding service could not answer (network, quota, bad answer)."""


def _key(name: str) -> str:
    """A place name as looked up: NFC, case-folded, single spaces, ", " between parts."""
    parts = (" ".join(part.split()) for part in unicodedata.normalize("NFC", name).casefold().split(","))
    return ", ".join(part for part in parts if part)


def _coordinates(lat: Any, lon: Any) -> tuple[float, float] | None:
    try:
        point = float(lat), float(lon)
    except (TypeError, ValueError):
        return None
    ok = all(math.isfinite(v) for v in point) and abs(point[0]) <= 90 and abs(point[1]) <= 180
    return point if ok else None


class Gazetteer:
    """Place names with coordinates from a user's file: CSV with columns `name,lat,lon`, or JSON
    (`{"name": [lat, lon]}` or a list of `{"name", "lat", "lon"}`). A location not found as a whole is looked up
    without its leading comma-separated parts ("Acropolis, Athens, Greece" -> "Athens, Greece" -> "Greece")."""

    name = "gazetteer"

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.places: dict[str, tuple[float, float]] = {}
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    pairs = [(name, value if isinstance(value, (list, tuple)) else (None, None)) for name, value in data.items()]
                    entries = [(name, *point) for name, point in pairs]
                else:
                    entries = [(row.get("name"), row.get("lat"), row.get("lon")) for row in data]
            else:
                with open(path, newline="", encoding="utf-8") as file:
                    entries = [(row.get("name"), row.get("lat"), row.get("lon")) for row in csv.DictReader(file)]
        except (OSError, ValueError, AttributeError, TypeError) as error:
            raise EarthvlError(f"gazetteer {path} cannot be read ({error}): use CSV name,lat,lon or JSON") from None
        for number, (name, lat, lon) in enumerate(entries, 1):
            point = _coordinates(lat, lon)
            if not isinstance(name, str) or not name.strip() or point is None:
                raise EarthvlError(f"gazetteer {path}, entry {number}: needs a name and lat/lon in range")
            self.places[_key(name)] = point
        if not self.places:
            raise EarthvlError(f"gazetteer {path} holds no places")

    def locate(self, query: str) -> tuple[float, float] | None:
        parts = _key(query).split(", ")
        for start in range(len(parts)):
            point = self.places.get(", ".join(parts[start:]))
            if point is not None:
                return point
        return None


class OnlineGeocoder:
    """A geocoding service through geopy, at most one request per `min_delay` seconds (Nominatim's usage policy
    asks for one per second), with geopy's own retries off: a failure leaves the record's coordinates null."""

    def __init__(
        self, service: str = "nominatim", *, domain: str | None = None, scheme: str = "https",
        user_agent: str, timeout: float = 10.0, min_delay: float = 1.0,
    ) -> None:
        from geopy.extra.rate_limiter import RateLimiter
        from geopy.geocoders import get_geocoder_for_service

        try:
            service_class = get_geocoder_for_service(service)
        except Exception as error:  # geopy's GeocoderNotFound
            raise EarthvlError(f"unknown geocoder {service!r}: {error}") from None
        options: dict[str, Any] = {"scheme": scheme, "timeout": timeout, "user_agent": user_agent}
        if domain:
            options["domain"] = domain
        self.name = f"{service} ({domain or 'default server'})"
        self._geocode = RateLimiter(
            service_class(**options).geocode, min_delay_seconds=min_delay, max_retries=0, swallow_exceptions=False
        )

    def locate(self, query: str) -> tuple[float, float] | None:
        from geopy.exc import GeopyError

        try:
            found = self._geocode(query, exactly_one=True)
        except GeopyError as error:
            raise GeocodingError(f"{type(error).__name__}: {error}") from None
        return None if found is None else _coordinates(found.latitude, found.longitude)


class Chain:
    """Several geocoders, asked in order until one knows the place."""

    def __init__(self, geocoders: list[Geocoder]) -> None:
        self.geocoders = geocoders
        self.name = " then ".join(g.name for g in geocoders)

    def locate(self, query: str) -> tuple[float, float] | None:
        for geocoder in self.geocoders:
            point = geocoder.locate(query)
            if point is not None:
                return point
        return None


def geocode(records: list[Record], geocoder: Geocoder | None, report: AnnotationReport, cache_dir: Path) -> None:
    """Fill `lat`/`lon` of the records that have none from their `location`; answers (also "not found") are cached
    in `cache_dir`, so a re-run asks the service only about new places."""
    report.notes["geocoder"] = geocoder.name if geocoder else None
    cache_path = cache_dir / CACHE_FILE
    cache: dict[str, Any] = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path.is_file() else {}
    for record in records:
        if record.lat is not None and record.lon is not None:
            report.count(STEP, "from_records")
            continue
        record.lat = record.lon = None
        location = record.fields.get("location")
        if not location:
            report.flag(STEP, record.id, "no location in the annotation: lat/lon null")
            continue
        if geocoder is None:
            report.count(STEP, "no_geocoder")
            continue
        key = f"{geocoder.name}\n{location}"
        if key not in cache:
            try:
                cache[key] = geocoder.locate(location)
            except GeocodingError as error:
                report.flag(STEP, record.id, f"geocoding {location!r} failed: {error}: lat/lon null")
                continue
        if cache[key] is None:
            report.flag(STEP, record.id, f"{geocoder.name} does not know {location!r}: lat/lon null")
            continue
        record.lat, record.lon = cache[key]
        report.count(STEP, "geocoded")
    if geocoder is None and report.steps.get(STEP, {}).get("no_geocoder"):
        report.notes["geocode_note"] = "no geocoder (--gazetteer or --geocoder) was given: lat/lon stay null"
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(cache_path, json.dumps(cache, ensure_ascii=False, indent=1).encode("utf-8"))
