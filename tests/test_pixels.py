import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BlipImageProcessorPil, CLIPImageProcessorPil
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from earthvl.images import BadImage, open_image
from earthvl.models.pixels import PixelTransform
from earthvl.models.tiny import IMAGE_SIZE, _clip_image_processor

RNG = np.random.default_rng(0)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def smooth_rgb(width: int, height: int) -> Image.Image:
    """Photo-like content: a bicubic-upsampled coarse grid plus grain (flat colour would hide resize errors)."""
    coarse = Image.fromarray(RNG.integers(0, 256, (height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8))
    base = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC)).astype(np.float64)
    return Image.fromarray(np.clip(base + RNG.normal(0, 8, base.shape), 0, 255).astype(np.uint8))


WIDE = smooth_rgb(97, 61)
PALETTE = WIDE.convert("P")
INPUTS = {
    "png": encode(WIDE, "PNG"),
    "jpeg": encode(WIDE, "JPEG", quality=90),
    "tall jpeg": encode(WIDE.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90),
    "rgba png": encode(Image.fromarray(RNG.integers(0, 256, (70, 50, 4), dtype=np.uint8)), "PNG"),
    "L png": encode(Image.fromarray(RNG.integers(0, 256, (40, 90), dtype=np.uint8)), "PNG"),
    "palette png with transparency": encode(PALETTE, "PNG", transparency=3),
}
PROCESSORS = {
    "tiny clip": _clip_image_processor(),
    "vit-b/32 clip": CLIPImageProcessorPil(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        resample=Image.Resampling.BICUBIC,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    ),
    "tiny blip": BlipImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD
    ),
    "non-square blip": BlipImageProcessorPil(size={"height": 48, "width": 80}),
    "crop larger than the resize (zero padding)": CLIPImageProcessorPil(
        size={"shortest_edge": 30}, crop_size={"height": 41, "width": 37}
    ),
    "scalar mean/std, no rescale, bilinear": CLIPImageProcessorPil(
        do_rescale=False, image_mean=0.5, image_std=0.25, resample=Image.Resampling.BILINEAR
    ),
}


def reference(processor, data: bytes) -> torch.Tensor:
    return processor(images=[Image.open(io.BytesIO(data))], return_tensors="pt").pixel_values


@pytest.mark.parametrize("processor_name", PROCESSORS)
def test_matches_the_processor(processor_name):
    processor = PROCESSORS[processor_name]
    transform = PixelTransform.from_processor(processor, draft=False)
    for input_name, data in INPUTS.items():
        expected = reference(processor, data)
        got = transform([{"bytes": data, "path": None}])
        assert got.dtype == torch.float32 and got.shape == expected.shape, input_name
        assert torch.allclose(got, expected, rtol=0, atol=1e-5), input_name


def test_cells_bytes_paths_and_pil_images_agree(tmp_path):
    path = tmp_path / "wide.jpg"
    path.write_bytes(INPUTS["jpeg"])
    transform = PixelTransform.from_processor(PROCESSORS["tiny clip"])
    cells = [{"bytes": INPUTS["jpeg"], "path": "wide.jpg"}, {"bytes": None, "path": str(path)}, INPUTS["jpeg"], str(path)]
    batch = transform([*cells, Image.open(path)])
    assert batch.shape == (5, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert all(torch.equal(batch[0], image) for image in batch[1:])


def test_draft_is_close_on_a_large_jpeg_and_a_no_op_on_png():
    large = encode(smooth_rgb(1600, 1200), "JPEG", quality=90)
    decoded = open_image(large, draft_size=(224, 224))
    assert decoded.size == (400, 300) and decoded.info["original_size"] == (1600, 1200)

    processor = PROCESSORS["vit-b/32 clip"]
    drafted = PixelTransform.from_processor(processor, draft=True)([large])
    difference = (drafted - reference(processor, large)).abs()
    assert difference.mean() < 0.03 and difference.max() < 0.3  # one uint8 level is ~0.015 after normalising

    assert torch.equal(PixelTransform.from_processor(processor, draft=True)([INPUTS["png"]]), reference(processor, INPUTS["png"]))


@pytest.mark.parametrize("draft", [True, False])
def test_bad_images(draft):
    transform = PixelTransform.from_processor(PROCESSORS["tiny clip"], draft=draft)
    with pytest.raises(BadImage, match="cannot decode the image broken.jpg"):
        transform([{"bytes": INPUTS["jpeg"][:200] + b"\0" * 50, "path": "broken.jpg"}])
    with pytest.raises(BadImage, match="cannot decode the image junk.png"):
        transform([{"bytes": b"not an image", "path": "junk.png"}])
    limited = PixelTransform.from_processor(PROCESSORS["tiny clip"], draft=draft, max_pixels=97 * 61 - 1)
    with pytest.raises(BadImage, match="wide.jpg is 97x61 px, over the limit of 5,916 pixels"):
        limited([{"bytes": INPUTS["jpeg"], "path": "wide.jpg"}])


def test_unsupported_settings_are_named():
    with pytest.raises(ValueError, match="size="):
        PixelTransform.from_processor(CLIPImageProcessorPil(size={"shortest_edge": 224, "longest_edge": 320}))
    with pytest.raises(ValueError, match="do_pad"):
        PixelTransform.from_processor(CLIPImageProcessorPil(do_pad=True))

    class Custom(CLIPImageProcessorPil):
        def _preprocess(self, images, **kwargs):
            raise NotImplementedError

    with pytest.raises(ValueError, match="overrides _preprocess"):
        PixelTransform.from_processor(Custom())


def test_uneven_batches_and_non_rgb_without_conversion_are_refused():
    no_crop = PixelTransform.from_processor(CLIPImageProcessorPil(size={"shortest_edge": 32}, do_center_crop=False))
    with pytest.raises(ValueError, match="different sizes"):
        no_crop([INPUTS["png"], INPUTS["tall jpeg"]])
    rgb_only = PixelTransform.from_processor(CLIPImageProcessorPil(do_convert_rgb=False))
    with pytest.raises(BadImage, match="do_convert_rgb=False"):
        rgb_only([INPUTS["L png"]])
