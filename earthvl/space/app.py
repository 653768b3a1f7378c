"""The earthvl demo: a Gradio app with three tabs, the same on a laptop (`earthvl demo`), in CI and on a Space.

- Caption: a LLaVA-style VLM answers a prompt about an uploaded image (default: the captioning instruction).
- Classify: CLIP zero-shot classification against typed labels or a preset (EuroSAT, RESISC45, land cover).
- Retrieve: CLIP text-to-image search over a small gallery (`earthvl.space.gallery`).

Models and gallery come from `resolve_settings` (explicit values, then `EARTHVL_VLM_MODEL`, `EARTHVL_CLIP_MODEL`,
`EARTHVL_GALLERY`, then the Space folder's `models/vlm`, `models/clip`, `gallery`, then the tiny models and a
sample gallery). The handlers (`DemoApp.caption`, `classify`, `retrieve`) are plain Python and raise
`EarthvlError` with a message for the user; the `ui_*` methods the page calls turn any failure into a message in
the tab's status line (`ELEM_IDS[tab]["status"]`, starting with `ERROR_PREFIX`), never a traceback. The element
ids in `ELEM_IDS` are stable: browser tests select by them.

Gradio is imported only when the page is built, so the handlers and settings work without it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image as PILImage

from earthvl.builders.chatearthnet.landcover import CLASS_NAMES as LAND_COVER_NAMES
from earthvl.errors import EarthvlError
from earthvl.eval.captioning import LLAVA_MAX_NEW_TOKENS
from earthvl.eval.classnames import EUROSAT, EUROSAT_TEMPLATES, REMOTE_SENSING_TEMPLATES, RESISC45
from earthvl.eval.generation import LlavaGenerator
from earthvl.eval.eval_model import EvalModel, load_eval_model
from earthvl.models.families import CLIP, VLM
from earthvl.models.clip import TextChunker, image_embeddings, text_embeddings, text_limit, zero_shot_classifier
from earthvl.models.tiny import TINY_MODELS
from earthvl.prompts import CAPTION_INSTRUCTION
from earthvl.space.gallery import GalleryImage, read_gallery, read_image, sample_gallery, sample_gallery_dir

logger = logging.getLogger(__name__)

VLM_ENV, CLIP_ENV, GALLERY_ENV = "EARTHVL_VLM_MODEL", "EARTHVL_CLIP_MODEL", "EARTHVL_GALLERY"
"""Environment variables (a Space's settings) naming the models and the gallery."""
VLM_DIR, CLIP_DIR, GALLERY_DIR = "models/vlm", "models/clip", "gallery"
"""Folders of a Space (relative to its app.py) used when present and no variable is set."""
DEFAULT_VLM, DEFAULT_CLIP = VLM.tiny_model, CLIP.tiny_model
DEMO_MAX_PIXELS = 25_000_000
"""Uploads above 25 Mpx (e.g. 5000 x 5000) are refused from their header, before decoding."""
MAX_ASPECT = 50
"""Longest side / shortest side: a 1 x 1,000,000 strip would become enormous once resized to the model's input."""
MAX_UPLOAD_SIZE = "50mb"
MAX_PROMPT_CHARS = 2000
MAX_QUERY_CHARS = 1000
"""A retrieval query: CLIP reads 77 tokens of it (a few chunks when split at sentence ends); longer only costs CPU."""
MAX_LABELS = 200
MAX_LABEL_CHARS = 100
TOP_CLASSES = 5
DEFAULT_RESULTS = 6
ERROR_PREFIX = "**Error:** "
"""How the status line starts when a request fails (shown as "Error: ..." in the page)."""

TABS = {"caption": "Caption", "classify": "Classify", "retrieve": "Retrieve"}
ELEM_IDS: dict[str, dict[str, str]] = {
    "caption": {"tab": "caption-tab", "image": "caption-image", "prompt": "caption-prompt", "button": "caption-button",
                "output": "caption-output", "status": "caption-status"},
    "classify": {"tab": "classify-tab", "image": "classify-image", "labels": "classify-labels",
                 "preset": "classify-preset", "button": "classify-button", "output": "classify-output",
                 "status": "classify-status"},
    "retrieve": {"tab": "retrieve-tab", "query": "retrieve-query", "count": "retrieve-count",
                 "button": "retrieve-button", "gallery": "retrieve-gallery", "status": "retrieve-status"},
}
"""Tab -> part -> `elem_id` of the component (the buttons read Describe, Classify and Search)."""


@dataclass(frozen=True)
class LabelSet:
    """Class names with the prompt templates they are classified with, and the preset they are (None: typed)."""

    names: tuple[str, ...]
    templates: tuple[str, ...]
    preset: str | None = None

    def describe(self) -> str:
        return f"preset {self.preset} ({len(self.names)} classes)" if self.preset else f"{len(self.names)} typed labels"


PRESETS = {
    "EuroSAT": (EUROSAT.prompts, EUROSAT_TEMPLATES),
    "RESISC45": (RESISC45.prompts, REMOTE_SENSING_TEMPLATES),
    "Land cover": (LAND_COVER_NAMES, REMOTE_SENSING_TEMPLATES),
}
"""Preset -> (class names, templates): CLIP_benchmark's names and templates for the benchmarks, the 11 WorldCover
classes of ChatEarthNet with the general remote-sensing templates."""
DEFAULT_PRESET = "Land cover"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs: model references for `load_eval_model` and a gallery folder (None: the sample gallery)."""

    vlm_model: str
    clip_model: str
    gallery: str | None


def resolve_settings(
    app_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    vlm_model: str | None = None,
    clip_model: str | None = None,
    gallery: str | None = None,
) -> DemoSettings:
    """The models and gallery to use: each explicit value, else its environment variable (`VLM_ENV`, `CLIP_ENV`,
    `GALLERY_ENV`), else the folder `VLM_DIR`/`CLIP_DIR`/`GALLERY_DIR` of `app_dir` if it exists, else the tiny
    model (gallery: None, the sample gallery). `environ` defaults to `os.environ`; empty values count as unset."""
    environ = os.environ if environ is None else environ

    def pick(explicit: str | None, variable: str, folder: str, fallback: str | None) -> str | None:
        if explicit:
            return explicit
        if environ.get(variable):
            return environ[variable]
        if app_dir is not None and (Path(app_dir) / folder).is_dir():
            return str(Path(app_dir) / folder)
        return fallback

    return DemoSettings(
        vlm_model=pick(vlm_model, VLM_ENV, VLM_DIR, DEFAULT_VLM),
        clip_model=pick(clip_model, CLIP_ENV, CLIP_DIR, DEFAULT_CLIP),
        gallery=pick(gallery, GALLERY_ENV, GALLERY_DIR, None),
    )


def shown(reference: str) -> str:
    """A model or gallery reference as the page shows it: a folder inside the working directory relative to it (a
    Space's `models/vlm`, not the server's absolute path), anything else as it is."""
    path = Path(reference)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return str(path.relative_to(Path.cwd()))
    return reference


def parse_labels(text: str | None) -> list[str]:
    """Labels typed one per line or separated by commas, stripped, empty ones dropped, repeats (ignoring case) once."""
    labels: dict[str, str] = {}
    for label in re.split(r"[,\n]", text or ""):
        label = label.strip()
        if label:
            labels.setdefault(label.casefold(), label)
    return list(labels.values())


def choose_labels(labels_text: str | None, preset: str | None) -> LabelSet:
    """Typed labels when any are typed (the preset is then ignored), else the preset's classes."""
    typed = parse_labels(labels_text)
    if len(typed) == 1:
        raise EarthvlError(f"type at least two labels, separated by commas or new lines (got only {typed[0]!r})")
    if len(typed) > MAX_LABELS:
        raise EarthvlError(f"type at most {MAX_LABELS} labels (got {len(typed)})")
    longest = max(typed, key=len, default="")
    if len(longest) > MAX_LABEL_CHARS:
        raise EarthvlError(f"a label is {len(longest):,} characters long; keep each under {MAX_LABEL_CHARS:,}")
    if typed:
        return LabelSet(tuple(typed), REMOTE_SENSING_TEMPLATES)
    if not preset:
        raise EarthvlError("type at least two labels, separated by commas or new lines, or pick a preset")
    if preset not in PRESETS:
        raise EarthvlError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    names, templates = PRESETS[preset]
    return LabelSet(tuple(names), tuple(templates), preset)


def upload_path(value: Any) -> str | None:
    """The server-side file of an image input: a path, or the file payload Gradio passes unprocessed."""
    if isinstance(value, dict):
        return value.get("path")
    return None if value is None else str(value)


_T = TypeVar("_T")


class DemoApp:
    """The demo's models and gallery, loaded once (on first use or by `load`), and its request handlers."""

    def __init__(self, settings: DemoSettings, *, max_pixels: int = DEMO_MAX_PIXELS, device: str | None = None) -> None:
        if max_pixels < 1:
            raise EarthvlError(f"max_pixels must be positive, got {max_pixels}")
        self.settings, self.max_pixels = settings, max_pixels
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.gallery_dir = Path(settings.gallery) if settings.gallery else sample_gallery_dir()
        self._lock = threading.RLock()
        self._loaded: dict[str, Any] = {}

    def _once(self, name: str, load: Callable[[], _T]) -> _T:
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = load()
            return self._loaded[name]

    def vlm(self) -> EvalModel:
        def load() -> EvalModel:
            model = load_eval_model(self.settings.vlm_model, task="caption", device=self.device)
            if model.family != VLM.name:
                raise EarthvlError(
                    f"{self.settings.vlm_model} is a {model.family} model; the Caption tab needs a LLaVA-style VLM"
                )
            return model

        return self._once("vlm", load)

    def clip(self) -> EvalModel:
        return self._once("clip", lambda: load_eval_model(self.settings.clip_model, task="retrieve", device=self.device))

    def chunker(self) -> TextChunker:
        """CLIP's text fitting as CLIP_benchmark's: long texts truncated to the text tower."""

        def load() -> TextChunker:
            tokenizer = self.clip().processor.tokenizer
            return TextChunker(tokenizer, text_limit(self.clip().model, tokenizer), mode="truncate")

        return self._once("chunker", load)

    def gallery(self) -> tuple[list[GalleryImage], torch.Tensor]:
        """The gallery's images and their normalised CLIP embeddings (N, D)."""

        def load() -> tuple[list[GalleryImage], torch.Tensor]:
            folder = self.gallery_dir if self.settings.gallery else sample_gallery()
            images = read_gallery(folder)
            batches = [images[start : start + 32] for start in range(0, len(images), 32)]
            embeddings = [self.embed([read_image(i.path, max_pixels=self.max_pixels) for i in batch]) for batch in batches]
            return images, torch.cat(embeddings) if embeddings else torch.empty(0)

        return self._once("gallery", load)

    def load(self) -> None:
        """Load both models and embed the gallery now (startup) instead of on the first request."""
        self.vlm()
        self.clip()
        self.gallery()

    def image(self, path: str | None) -> PILImage.Image:
        """The uploaded image as RGB: its size checked against the pixel limit before decoding, its aspect ratio
        after."""
        if not path:
            raise EarthvlError("upload an image first")
        try:
            with open(path, "rb") as file:  # a file object, so messages do not show the server's upload path
                image = read_image(file, max_pixels=self.max_pixels)
        except OSError as error:
            raise EarthvlError(f"cannot read the uploaded file: {error.strerror or error}") from error
        if max(image.size) > MAX_ASPECT * min(image.size):
            raise EarthvlError(f"the image is {image.width}x{image.height} px; this demo reads images at most "
                               f"{MAX_ASPECT} times longer than wide")
        return image

    def embed(self, images: list[PILImage.Image]) -> torch.Tensor:
        """Normalised CLIP embeddings of RGB images, preprocessed by the model's own processor."""
        clip = self.clip()
        pixels = clip.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return image_embeddings(clip.model, pixels)

    def caption(self, image_path: str | None, prompt: str | None) -> str:
        """The VLM's greedy answer to `prompt` about the image."""
        prompt = (prompt or "").strip()
        if not prompt:
            raise EarthvlError(f"type a prompt, e.g. {CAPTION_INSTRUCTION!r}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise EarthvlError(f"the prompt is {len(prompt)} characters long; keep it under {MAX_PROMPT_CHARS}")
        image = self.image(image_path)
        vlm = self.vlm()
        generator = LlavaGenerator(vlm.model, vlm.processor, prompt, max_new_tokens=LLAVA_MAX_NEW_TOKENS)
        return generator([image])[0]

    def classify(self, image_path: str | None, labels_text: str | None, preset: str | None) -> dict[str, float]:
        """The `TOP_CLASSES` most probable labels -> probability (softmax of 100 x cosine, as CLIP_benchmark)."""
        labels = choose_labels(labels_text, preset)
        image = self.image(image_path)
        probabilities = (100 * self.embed([image]) @ self.classifier(labels).T).softmax(dim=-1)[0]
        top = probabilities.topk(min(TOP_CLASSES, len(labels.names)))
        return {labels.names[i]: p for p, i in zip(top.values.tolist(), top.indices.tolist())}

    def classifier(self, labels: LabelSet) -> torch.Tensor:
        """Class embeddings of `labels`; a preset's are computed once."""
        def compute() -> torch.Tensor:
            return zero_shot_classifier(self.clip().model, self.chunker(), labels.names, labels.templates)

        return self._once(f"classifier {labels.preset}", compute) if labels.preset else compute()

    def retrieve(self, query: str | None, k: int = DEFAULT_RESULTS) -> list[tuple[str, str]]:
        """The `k` gallery images closest to `query`, best first, as (path, caption) pairs."""
        query = (query or "").strip()
        if not query:
            raise EarthvlError("type what to look for, e.g. 'a river crossing farmland'")
        if len(query) > MAX_QUERY_CHARS:
            raise EarthvlError(f"the query is {len(query):,} characters long; keep it under {MAX_QUERY_CHARS:,}")
        images, embeddings = self.gallery()
        if not images:
            raise EarthvlError(f"the gallery {self.gallery_dir} has no images")
        scores = (text_embeddings(self.clip().model, self.chunker(), [query]) @ embeddings.T)[0]
        best = scores.topk(max(1, min(int(k), len(images)))).indices.tolist()
        return [(str(images[i].path), images[i].label()) for i in best]

    def ui_caption(self, image: Any, prompt: str | None) -> tuple[str, str]:
        """(answer, status) for the Caption tab."""
        def run() -> tuple[str, str]:
            answer = self.caption(upload_path(image), prompt)
            return answer, f"Answered by `{shown(self.settings.vlm_model)}`." if answer else "The model returned an empty answer."

        return _respond(run, ("",), "captioning")

    def ui_classify(
        self, image: Any, labels_text: str | None, preset: str | None
    ) -> tuple[dict[str, float] | None, str]:
        """(label probabilities, status) for the Classify tab; the status says which labels were used."""
        def run() -> tuple[dict[str, float], str]:
            scores = self.classify(upload_path(image), labels_text, preset)
            labels = choose_labels(labels_text, preset).describe()
            return scores, f"Labels: {labels}; model `{shown(self.settings.clip_model)}`."

        return _respond(run, (None,), "classification")

    def ui_retrieve(self, query: str | None, k: float = DEFAULT_RESULTS) -> tuple[list[tuple[str, str]], str]:
        """(gallery items, status) for the Retrieve tab."""
        def run() -> tuple[list[tuple[str, str]], str]:
            found = self.retrieve(query, int(k))
            return found, f"The {len(found)} best of {len(self.gallery()[0])} gallery images."

        return _respond(run, ([],), "retrieval")


def _respond(run: Callable[[], tuple], cleared: tuple, action: str) -> tuple:
    """`run()`'s outputs and status, or `cleared` outputs and the error as the status: a message for the user's
    mistakes, a short note (and the traceback in the server log) for anything else."""
    try:
        return run()
    except EarthvlError as error:
        return (*cleared, ERROR_PREFIX + str(error))
    except Exception as error:
        logger.exception("%s failed", action)
        return (*cleared, f"{ERROR_PREFIX}{action} failed ({type(error).__name__}); the server log has the details")


def require_gradio() -> Any:
    """The gradio module, or an error saying how to install it."""
    try:
        import gradio
    except ImportError as error:
        raise EarthvlError('the demo needs Gradio: pip install "earthvl[demo]"') from error
    return gradio


def _header(app: DemoApp) -> str:
    settings = app.settings
    gallery = shown(settings.gallery) if settings.gallery else "the offline sample world"
    lines = [
        "# earthvl demo",
        f"VLM `{shown(settings.vlm_model)}` · CLIP `{shown(settings.clip_model)}` · gallery: {gallery}",
    ]
    if {settings.vlm_model, settings.clip_model} & set(TINY_MODELS):
        lines.append(
            f"*Tiny models have random weights, so their answers are noise: set `{VLM_ENV}` and `{CLIP_ENV}` to "
            "trained checkpoints.*"
        )
    return "\n\n".join(lines)


def build_blocks(app: DemoApp) -> Any:
    """The page (a `gr.Blocks`) for `app`. Image inputs reach the handlers as unprocessed file payloads
    (`preprocess=False`): gr.Image's own preprocessing would open the upload with PIL first, failing on non-images
    and on PIL's decompression-bomb limit with its own messages and decoding any image not in `image_mode`."""
    gr = require_gradio()
    gr.set_static_paths([app.gallery_dir])  # served from where they are, not copied per request
    image_input = dict(type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Image", height=320)
    with gr.Blocks(title="earthvl demo", analytics_enabled=False) as blocks:
        gr.Markdown(_header(app))
        with gr.Tab(TABS["caption"], elem_id=ELEM_IDS["caption"]["tab"]):
            ids = ELEM_IDS["caption"]
            with gr.Row():
                image = gr.Image(elem_id=ids["image"], **image_input)
                with gr.Column():
                    prompt = gr.Textbox(CAPTION_INSTRUCTION, label="Prompt", lines=2, elem_id=ids["prompt"])
                    button = gr.Button("Describe", variant="primary", elem_id=ids["button"])
                    output = gr.Textbox(label="Answer", lines=6, interactive=False, elem_id=ids["output"])
                    status = gr.Markdown(elem_id=ids["status"])
            button.click(app.ui_caption, [image, prompt], [output, status], preprocess=False, api_name="caption")
        with gr.Tab(TABS["classify"], elem_id=ELEM_IDS["classify"]["tab"]):
            ids = ELEM_IDS["classify"]
            with gr.Row():
                image = gr.Image(elem_id=ids["image"], **image_input)
                with gr.Column():
                    labels = gr.Textbox(
                        label="Labels", lines=3, elem_id=ids["labels"], placeholder="forest, river, airport",
                        info="Comma- or newline-separated. Typed labels take precedence over the preset.",
                    )
                    preset = gr.Dropdown(list(PRESETS), value=DEFAULT_PRESET, label="Preset", elem_id=ids["preset"],
                                         info="Used when no labels are typed.")
                    button = gr.Button("Classify", variant="primary", elem_id=ids["button"])
                    output = gr.Label(num_top_classes=TOP_CLASSES, label="Top classes", elem_id=ids["output"])
                    status = gr.Markdown(elem_id=ids["status"])
            button.click(
                app.ui_classify, [image, labels, preset], [output, status], preprocess=False, api_name="classify"
            )
        with gr.Tab(TABS["retrieve"], elem_id=ELEM_IDS["retrieve"]["tab"]):
            ids = ELEM_IDS["retrieve"]
            with gr.Row():
                query = gr.Textbox(
                    label="Query", scale=4, elem_id=ids["query"], placeholder="a river crossing farmland"
                )
                count = gr.Slider(1, 12, value=DEFAULT_RESULTS, step=1, label="Images", elem_id=ids["count"])
            button = gr.Button("Search", variant="primary", elem_id=ids["button"])
            status = gr.Markdown(elem_id=ids["status"])
            gallery = gr.Gallery(label="Best matches", columns=3, elem_id=ids["gallery"])
            button.click(app.ui_retrieve, [query, count], [gallery, status], preprocess=False, api_name="retrieve")
            query.submit(app.ui_retrieve, [query, count], [gallery, status], preprocess=False, api_visibility="private")
    return blocks


def build_demo(
    vlm_model: str | None = None,
    clip_model: str | None = None,
    gallery: str | None = None,
    max_pixels: int = DEMO_MAX_PIXELS,
) -> Any:
    """The demo page with these models and gallery (each None: from the environment, else the tiny default);
    models load on the first request."""
    settings = resolve_settings(None, vlm_model=vlm_model, clip_model=clip_model, gallery=gallery)
    return build_blocks(DemoApp(settings, max_pixels=max_pixels))


def launch(app: DemoApp, *, host: str | None = None, port: int | None = None, share: bool = False) -> None:
    """Serve `app` until interrupted. `host`/`port` None: `GRADIO_SERVER_NAME`/`GRADIO_SERVER_PORT`, else
    127.0.0.1 and the first free port from 7860 (Gradio's defaults)."""
    build_blocks(app).queue().launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD_SIZE)


def serve_space(app_file: str | Path | None = None) -> None:
    """Run the demo as a Space: settings from the environment, folder defaults relative to `app_file` (the Space's
    app.py, or its folder), models loaded and the gallery embedded before the page is served."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    app_dir = None if app_file is None else Path(app_file) if Path(app_file).is_dir() else Path(app_file).parent
    app = DemoApp(resolve_settings(app_dir))
    app.load()
    launch(app)
