"""Step 4, annotate: the image and its article (or summary) go to a vision LLM that answers with the RS_image
schema: metadata and five captions. With `filters`, images the model calls not remote sensing, or charts, are
dropped."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image as PILImage

from earthvl.builders.gaia.annotate.prompts import Prompt
from earthvl.builders.gaia.annotate.records import Record
from earthvl.builders.gaia.annotate.report import AnnotationReport
from earthvl.builders.gaia.annotate.schema import SCHEMA_NAME, annotation_model, gaia_fields, json_schema
from earthvl.builders.gaia.annotate.structured import run_structured
from earthvl.images import PIL_ERRORS, BadImage, open_image, to_rgb
from earthvl.llm.backends import Backend, ChatRequest, image_data_url
from earthvl.llm.cache import ResultCache, cache_key
from earthvl.llm.options import BackendArguments
from earthvl.llm.runner import Job

STEP = "annotate"
FILTER_STEP = "filter"
API_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
"""Image formats OpenAI-compatible vision endpoints accept as they are."""
MAX_TOKENS = 1500
"""Default answer limit: five captions of ~40 words and the metadata fit with room to spare."""


def image_for_model(path: Path, side: int, max_pixels: int) -> str:
    """The image as a data URL: its own bytes when it is small enough and in a format vision APIs take, else
    downscaled to `side` pixels on its longest side and sent as a JPEG (quality 90)."""
    try:
        with PILImage.open(path) as header:
            size, mime = header.size, API_FORMATS.get(header.format or "")
    except PIL_ERRORS as error:
        raise BadImage(f"cannot decode the image {path}: {error}") from error
    if mime and max(size) <= side and size[0] * size[1] <= max_pixels:
        return image_data_url(path.read_bytes(), mime)
    image = to_rgb(open_image(str(path), max_pixels=max_pixels, mode=None, draft_size=(side, side)))
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return image_data_url(buffer.getvalue(), "image/jpeg")


def annotate(
    records: list[Record],
    backend: Backend,
    cache: ResultCache,
    options: BackendArguments,
    prompt: Prompt,
    report: AnnotationReport,
    *,
    filters: bool,
    retries: int,
    max_chars: int | None,
    image_side: int,
    max_pixels: int,
    progress: bool = True,
) -> list[Record]:
    """The records with their GAIA fields filled from the model's answer; failures are dropped with the reason,
    records not asked (the run stopped) left out for a re-run."""
    model = annotation_model(filters)
    schema = json_schema(model, max_chars)
    jobs = []
    for record in records:
        try:
            image = image_for_model(record.image_file, image_side, max_pixels)
        except BadImage as error:
            report.drop(STEP, record.id, str(error))
            continue
        text = prompt.user.format(
            article=record.summary or record.text or "(no text)",
            image_alt=record.image_alt or "(none)",
            credits=record.credits or "(none)",
        )
        request = ChatRequest(
            messages=[
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": image}},
                ]},
            ],
            max_tokens=options.max_tokens or MAX_TOKENS,
            temperature=options.temperature or 0.0,
            seed=options.seed,
            json_schema=schema,
            schema_name=SCHEMA_NAME,
        )
        key = cache_key({
            "step": STEP, "image": record.sha256, "image_side": image_side, "text": text, "prompt": prompt.key(),
            "backend": backend.settings(), "sampling": request.sampling(),
        })
        jobs.append(Job(str(record.id), key, request))
    run = run_structured(STEP, backend, jobs, cache, options, model, retries, report, progress)
    asked = {job.record for job in jobs}
    kept = []
    for record in records:
        if str(record.id) not in asked or str(record.id) in run.pending:
            continue
        answer = run.answers.get(str(record.id))
        if answer is None:
            report.drop(STEP, record.id, run.failures[str(record.id)])
            continue
        if filters and not answer["is_remote_sensing"]:
            report.drop(FILTER_STEP, record.id, "the model says this is not a remote-sensing image")
            continue
        if filters and answer["is_chart"]:
            report.drop(FILTER_STEP, record.id, "the model says this image is a chart or a graph")
            continue
        record.fields = gaia_fields(model.model_validate(answer))
        kept.append(record)
    report.count(STEP, "in", len(records))
    report.count(STEP, "annotated", len(kept))
    return kept
