"""GAIA's automated annotation framework, end to end: scraped records -> clean -> de-duplicate -> summarise ->
annotate -> geocode -> split -> a GAIA-format folder that `earthvl build gaia` builds."""

from __future__ import annotations

from typing import Any

from earthvl.atomic import check_writable, refuse_symlink
from earthvl.builders.download.policy import FetchPolicy
from earthvl.builders.gaia.annotate import clean, dedup, extract, geocode, summarise, write
from earthvl.builders.gaia.annotate.options import AnnotateGaiaArguments
from earthvl.builders.gaia.annotate.prompts import load_prompt
from earthvl.builders.gaia.annotate.records import column_mapping, load_records
from earthvl.builders.gaia.annotate.report import AnnotationReport
from earthvl.errors import EarthvlError
from earthvl.llm.backends import Backend, make_backend
from earthvl.llm.cache import ResultCache
from earthvl.llm.options import BackendArguments
from earthvl.paths import refuse_overlap

CACHE_DIR = "cache"
FETCH_DIR = "images"
"""The fetched images, under CACHE_DIR with the fetch manifest: every record's, duplicates included, for re-runs."""
ANSWERS_FILE = "answers.jsonl"


def make_geocoder(args: AnnotateGaiaArguments) -> geocode.Geocoder | None:
    """The geocoder the options ask for: gazetteer, online service, both (gazetteer first) or none."""
    geocoders: list[Any] = []
    if args.gazetteer:
        geocoders.append(geocode.Gazetteer(args.gazetteer))
    if args.geocoder:
        geocoders.append(geocode.OnlineGeocoder(
            args.geocoder, domain=args.geocoder_domain, scheme=args.geocoder_scheme, user_agent=args.geocoder_user_agent,
        ))
    if not geocoders:
        return None
    return geocoders[0] if len(geocoders) == 1 else geocode.Chain(geocoders)


def annotate_gaia(
    args: AnnotateGaiaArguments,
    backend_args: BackendArguments,
    *,
    backend: Backend | None = None,
    fetch_policy: FetchPolicy | None = None,
    geocoder: geocode.Geocoder | None = None,
) -> dict[str, Any]:
    """Run every step on `args.records` into `args.out`; returns the report (also `annotation_report.json`).

    Re-running on the same folder resumes: fetched images, model answers and geocoder answers are reused, and the
    backend is asked only about records that have no answer yet. `backend`, `fetch_policy` and `geocoder` default to
    what the options configure."""
    out = check_writable(args.out, "annotation folder", folder=True)
    refuse_symlink(out, "writing into")
    refuse_overlap(out, "annotation folder", {"--records": args.records})
    if backend is None and backend_args.backend == "template":
        raise EarthvlError("annotate gaia needs a language model: --backend openai or --backend transformers")
    if backend is None and not backend_args.model:
        raise EarthvlError(f"--model is needed with --backend {backend_args.backend}")
    progress = not args.quiet
    prompts = {name: load_prompt(name, args.prompt_dir) for name in ("summary", "annotate")}
    report = AnnotationReport(str(args.records))
    report.notes["prompts"] = {name: {"version": p.version, "provenance": p.provenance} for name, p in prompts.items()}

    records, refused, ignored = load_records(args.records, column_mapping(args.columns))
    report.count("read", "rows", len(records) + len(refused))
    for entry in refused:
        report.drop("read", entry["id"], f"row {entry['row']}: {entry['reason']}")
    for entry in ignored:
        report.flag("read", entry["id"], f"row {entry['row']}: {entry['reason']}")
    if not records:
        raise EarthvlError(f"no usable record in {args.records}: see e.g. {refused[:3]}")
    geocoder = geocoder if geocoder is not None else make_geocoder(args)
    backend = backend or make_backend(backend_args)

    for record in records:
        record.text, cut = clean.cut_article(clean.clean_article(record.article), args.max_article_tokens)
        for problem in (cut, clean.article_problem(record.text, args.min_words)):
            if problem:
                report.flag("clean", record.id, problem)
    report.count("clean", "html", sum(clean.looks_like_html(r.article) for r in records))
    report.count("clean", "out", len(records))

    out.mkdir(parents=True, exist_ok=True)
    policy = fetch_policy or FetchPolicy(allow_networks=tuple(args.allow_networks or ()))
    records = dedup.deduplicate(
        records, out / CACHE_DIR / FETCH_DIR, policy, report,
        max_distance=args.near_duplicate_distance, max_pixels=args.max_pixels, progress=progress,
    )

    report.notes["backend"] = backend.settings()
    with ResultCache(out / CACHE_DIR / ANSWERS_FILE) as cache:
        records = summarise.summarise(
            records, args.summarise_above, backend, cache, backend_args, prompts["summary"], args.schema_retries,
            report, progress,
        )
        records = extract.annotate(
            records, backend, cache, backend_args, prompts["annotate"], report, filters=args.filters,
            retries=args.schema_retries, max_chars=args.max_chars, image_side=args.image_side,
            max_pixels=args.max_pixels, progress=progress,
        )
    report.usage["total"] = {
        name: sum(step.get(name, 0) for step in report.usage.values())
        for name in ("requests", "prompt_tokens", "completion_tokens", "cost")
    }
    stopped = [step for step, usage in report.usage.items() if usage.get("stopped_by")]
    if stopped:  # a partial dataset would look complete: write none
        reasons = ", ".join(f"{step} by {report.usage[step]['stopped_by']}" for step in stopped)
        report.notes["stopped"] = f"{reasons}: no dataset written; run the same command again to continue"
    else:
        geocode.geocode(records, geocoder, report, out / CACHE_DIR)
        images = write.write_images(records, out)  # before the JSONs that name them, strays after
        write.write_splits(records, out, report, seed=args.split_seed)
        report.count(write.STEP, "stray_images_removed", write.remove_stray_images(out, images))
        report.notes["images"] = f"{write.IMAGE_DIR}/<id>.<ext>: `earthvl build gaia --source {out} --images folder`"
    report.save(out)
    return report.as_dict()

