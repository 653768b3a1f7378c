"""The options of `earthvl annotate gaia` (with `earthvl.llm.options.BackendArguments` for the model)."""

from __future__ import annotations

from dataclasses import dataclass, field

from earthvl.builders.gaia.annotate.clean import DEFAULT_MAX_ARTICLE_TOKENS
from earthvl.builders.gaia.annotate.dedup import DEFAULT_MAX_DISTANCE
from earthvl.builders.gaia.annotate.records import COLUMNS, column_mapping
from earthvl.images import DEFAULT_MAX_PIXELS


@dataclass
class AnnotateGaiaArguments:
    """What to annotate, where to write it, and how each step behaves."""

    records: str = field(
        metadata={"help": f"Scraped records: JSONL, JSON, CSV, Parquet or a `datasets` folder, one row per image, with "
                  f"columns {', '.join(COLUMNS)} (image_src: an http(s) URL or a local path; article: text or HTML)."}
    )
    out: str = field(
        metadata={"help": "Output folder: train/val/test_data.json (GAIA's format), images/, annotation_report.json, "
                  "cache/ (resumes an interrupted run)."}
    )
    columns: list[str] | None = field(
        default=None, metadata={"help": "Column mapping for other names, as OURS=THEIRS, e.g. article=body image_src=img."}
    )
    min_words: int = field(default=20, metadata={"help": "Flag (keep, but report) articles shorter than this in words."})
    summarise_above: int = field(
        default=1500,
        metadata={"help": "Summarise articles longer than this many tokens (estimated as characters / 4) before the "
                  "annotation, as the GAIA notebook's first step."},
    )
    max_article_tokens: int = field(
        default=DEFAULT_MAX_ARTICLE_TOKENS,
        metadata={"help": "Cut (and report) articles longer than this many tokens (estimated as characters / 4): "
                  "with the prompt they fit a 128k-token model."},
    )
    filters: bool = field(
        default=False,
        metadata={"help": "Also ask is_remote_sensing and is_chart (as an earlier version of the GAIA notebook) and "
                  "drop images that are not remote sensing or are charts."},
    )
    schema_retries: int = field(
        default=2, metadata={"help": "Asks again for an answer that is not valid for the schema, before reporting it."}
    )
    max_chars: int | None = field(
        default=None,
        metadata={"help": "Bound every string of the requested schema to this many characters (lets a small local "
                  "model's constrained answer always end; default: no bound)."},
    )
    image_side: int = field(
        default=1024, metadata={"help": "Images sent to the model are downscaled to this longest side in pixels."}
    )
    near_duplicate_distance: int = field(
        default=DEFAULT_MAX_DISTANCE,
        metadata={"help": "Images whose 64-bit perceptual hashes differ in at most this many bits are duplicates "
                  "(-1: no near-duplicate check)."},
    )
    gazetteer: str | None = field(
        default=None, metadata={"help": "Offline geocoding: a CSV (name,lat,lon) or JSON file of place names."}
    )
    geocoder: str | None = field(
        default=None,
        metadata={"help": "Online geocoding through geopy: a service name such as nominatim (mind its usage "
                  "policy: at most one request per second, a real user agent)."},
    )
    geocoder_domain: str | None = field(
        default=None, metadata={"help": "The online geocoder's server (host[:port]), e.g. your own Nominatim."}
    )
    geocoder_scheme: str = field(default="https", metadata={"help": "http or https for --geocoder_domain."})
    geocoder_user_agent: str = field(
        default="earthvl-annotate", metadata={"help": "User agent the online geocoder sees (Nominatim requires one)."}
    )
    allow_networks: list[str] | None = field(
        default=None,
        metadata={"help": "Non-public networks image URLs may reach, e.g. 10.0.0.0/8 (default: none; loopback, private "
                  "and link-local addresses are refused)."},
    )
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"help": "Drop (and report) images with more pixels."})
    prompt_dir: str | None = field(
        default=None, metadata={"help": "Folder with your own summary.json / annotate.json prompts (default: shipped)."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the spatio-temporal split."})
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})

    def __post_init__(self) -> None:
        for name in ("min_words", "summarise_above", "max_article_tokens", "image_side", "max_pixels", "max_chars"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.schema_retries < 0:
            raise ValueError(f"schema_retries must not be negative, got {self.schema_retries}")
        if not -1 <= self.near_duplicate_distance <= 64:
            raise ValueError(f"near_duplicate_distance must be from -1 to 64, got {self.near_duplicate_distance}")
        column_mapping(self.columns)  # refuses a malformed mapping before anything runs
        if self.geocoder_scheme not in ("http", "https"):
            raise ValueError(f"geocoder_scheme must be http or https, got {self.geocoder_scheme!r}")
