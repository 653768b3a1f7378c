"""Convert a GeoChat checkpoint into a plain transformers LLaVA folder: `earthvl convert geochat`.

    earthvl convert geochat --src MBZUAI/geochat-7B --out geochat-7b-llava
    earthvl convert geochat --src ./geochat-7B --out geochat-7b-llava --vision_tower ./clip-vit-large-patch14-336
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from trl import TrlParser

from earthvl.atomic import check_writable
from earthvl.errors import check_positive
from earthvl.models.geochat import GEOCHAT_IMAGE_SIZE, REPORT_FILE, convert_geochat


@dataclass
class ConvertGeochatArguments:
    """Options of `earthvl convert geochat`."""

    src: str = field(metadata={"help": "GeoChat checkpoint: a folder or a Hub id such as MBZUAI/geochat-7B."})
    out: str = field(metadata={"help": "Folder to write the LlavaForConditionalGeneration checkpoint into."})
    vision_tower: str | None = field(
        default=None,
        metadata={
            "help": "CLIP checkpoint (folder or Hub id) for the vision tower's config and image processor, and its "
            "weights when the GeoChat checkpoint has none (default: the config's mm_vision_tower, as GeoChat)."
        },
    )
    reload_vision_tower: bool = field(
        default=False,
        metadata={
            "help": "Take the vision weights from --vision_tower even when the checkpoint holds some, as GeoChat's "
            "own loader does; the checkpoint's are then listed as dropped."
        },
    )
    image_size: int = field(
        default=GEOCHAT_IMAGE_SIZE, metadata={"help": "Input size in pixels; position embeddings are interpolated to it."}
    )
    pad_to_square: bool = field(
        default=False,
        metadata={
            "help": "Pad images to a square of the mean colour before resizing, as GeoChat's training and demo do "
            "(its evaluation scripts resize and centre-crop, the default)."
        },
    )
    dtype: str = field(
        default="float16",
        metadata={"help": "dtype of the saved weights (GeoChat runs in float16).", "choices": ["float16", "bfloat16", "float32"]},
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty --out."})

    def __post_init__(self) -> None:
        check_positive(self, "image_size")


def make_parser(prog: str = "earthvl convert geochat") -> TrlParser:
    return TrlParser(ConvertGeochatArguments, prog=prog, description=__doc__.splitlines()[0])


def main(args: ConvertGeochatArguments) -> int:
    check_writable(args.out, "output folder", folder=True)
    report = convert_geochat(
        args.src,
        args.out,
        vision_tower=args.vision_tower,
        reload_vision_tower=args.reload_vision_tower,
        image_size=args.image_size,
        pad_to_square=args.pad_to_square,
        dtype=args.dtype,
        overwrite=args.overwrite,
    )
    print(f"converted {args.src} into {report.out} (vision tower: {report.vision_source})")
    print(f"  {len(report.renamed)} weights renamed, {len(report.dropped)} dropped:")
    for reason, count in Counter(report.dropped.values()).most_common():
        print(f"    {count} x {reason}")
    for change in report.changes:
        print(f"  {change}")
    print(f"  every key is listed in {report.out / REPORT_FILE}")
    return 0
