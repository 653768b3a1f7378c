"""Serve the Gradio demo (captioning, zero-shot classification, retrieval) on this machine: `earthvl demo`.

    earthvl demo                                   # tiny models and a sample gallery: offline, no setup
    earthvl demo --vlm_model runs/vlm --clip_model runs/clip --gallery space/gallery --port 7861

Each model or gallery not given comes from $EARTHVL_VLM_MODEL, $EARTHVL_CLIP_MODEL, $EARTHVL_GALLERY, else the
tiny models and a gallery of the sample world (built once into the earthvl cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import TrlParser

from earthvl.errors import EarthvlError
from earthvl.space.app import DEMO_MAX_PIXELS, DemoApp, launch, require_gradio, resolve_settings
from earthvl.space.gallery import read_gallery


@dataclass
class DemoArguments:
    """Options of `earthvl demo`."""

    vlm_model: str | None = field(
        default=None,
        metadata={"help": "LLaVA-style model of the Caption tab: Hub id, folder, PEFT adapter from `earthvl train vlm` "
                          "or tiny-llava (default: $EARTHVL_VLM_MODEL, else tiny-llava)."},
    )
    clip_model: str | None = field(
        default=None,
        metadata={"help": "CLIP model of the Classify and Retrieve tabs (default: $EARTHVL_CLIP_MODEL, else tiny-clip)."},
    )
    gallery: str | None = field(
        default=None,
        metadata={"help": "Gallery folder (gallery.json and images, from earthvl.space.gallery.make_gallery) to search "
                          "(default: $EARTHVL_GALLERY, else a gallery of the sample world)."},
    )
    host: str | None = field(
        default=None, metadata={"help": "Address to serve on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)."}
    )
    port: int | None = field(
        default=None,
        metadata={"help": "Port (default: $GRADIO_SERVER_PORT, else 7860, or the next free one after it)."},
    )
    share: bool = field(default=False, metadata={"help": "Also open a public *.gradio.live link (needs internet)."})
    max_pixels: int = field(
        default=DEMO_MAX_PIXELS,
        metadata={"help": "Largest upload in pixels; larger images are refused from their header, before decoding."},
    )

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise ValueError(f"--max_pixels must be positive, got {self.max_pixels}")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"--port must be from 1 to 65535, got {self.port}")


def make_parser(prog: str = "earthvl demo") -> TrlParser:
    return TrlParser(DemoArguments, prog=prog, description=__doc__.splitlines()[0])


def main(args: DemoArguments) -> int:
    settings = resolve_settings(None, vlm_model=args.vlm_model, clip_model=args.clip_model, gallery=args.gallery)
    if settings.gallery:
        read_gallery(settings.gallery)  # a missing or broken gallery is named before anything heavy loads
    require_gradio()
    app = DemoApp(settings, max_pixels=args.max_pixels)
    print(f"loading {settings.vlm_model} and {settings.clip_model}, embedding the gallery {app.gallery_dir} ...")
    app.load()
    try:
        launch(app, host=args.host, port=args.port, share=args.share)
    except OSError as error:  # Gradio's "Cannot find empty port", an address that is not this machine's
        raise EarthvlError(f"cannot serve the demo: {error}") from error
    return 0
