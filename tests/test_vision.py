"""Tests for earthvl.models.vision on the tiny models: nine-band patch embeddings, band statistics, multispectral
pixel values and higher resolutions by position-embedding interpolation."""

import logging

import numpy as np
import pytest
import torch
from datasets import concatenate_datasets
from geochat_reference import geochat_interpolation
from PIL import Image
from transformers import AutoProcessor, CLIPModel, CLIPVisionModel, LlavaForConditionalGeneration

from earthvl.builders.chatearthnet.build import build_chatearthnet
from earthvl.builders.chatearthnet.layout import BANDS
from earthvl.data import load_split
from earthvl.errors import EarthvlError
from earthvl.model_names import resolve_model
from earthvl.models.tiny import IMAGE_SIZE, PATCH_SIZE
from earthvl.models.vision import (
    band_statistics,
    interpolate_position_embeddings,
    interpolate_positions,
    multispectral_pixel_values,
    vision_embeddings,
    widen_patch_embedding,
)
from earthvl.sample import generate_sample

NUM_BANDS = len(BANDS)
LARGER = 96  # 12 x 12 patches instead of the tiny models' 8 x 8
PROMPT = "USER: <image>\nWhat covers most of this image? ASSISTANT:"


def load_llava() -> LlavaForConditionalGeneration:
    return LlavaForConditionalGeneration.from_pretrained(resolve_model("tiny-llava")).eval()


def load_clip() -> CLIPModel:
    return CLIPModel.from_pretrained(resolve_model("tiny-clip")).eval()


def llava_inputs(processor, sizes=((80, 70), (64, 100))) -> dict[str, torch.Tensor]:
    """A processed batch of random images of different sizes (height, width), one prompt each."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    return dict(processor(images=images, text=[PROMPT] * len(images), return_tensors="pt"))


def with_extra_bands(pixel_values: torch.Tensor) -> torch.Tensor:
    """Nine-band pixel values whose first three channels are `pixel_values` and the other six random."""
    generator = torch.Generator().manual_seed(1)
    b, _, h, w = pixel_values.shape
    extra = 3 * torch.randn(b, NUM_BANDS - 3, h, w, generator=generator)
    return torch.cat([pixel_values, extra], dim=1)


def logits(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture
def llava_processor():
    return AutoProcessor.from_pretrained(resolve_model("tiny-llava"))


# ---------------------------------------------------------------------------------------------- finding the tower


def test_vision_embeddings_finds_the_clip_tower():
    llava, clip = load_llava(), load_clip()
    assert vision_embeddings(llava) is llava.model.vision_tower.embeddings
    assert vision_embeddings(clip) is clip.vision_model.embeddings
    tower = CLIPVisionModel(clip.config.vision_config)
    assert vision_embeddings(tower) is tower.embeddings
    with pytest.raises(EarthvlError, match="Sequential has no CLIP vision tower"):
        vision_embeddings(torch.nn.Sequential(torch.nn.Linear(2, 2)))


# ---------------------------------------------------------------------------------------------- nine bands


def test_widened_llava_starts_out_identical_to_the_rgb_one(llava_processor, tmp_path):
    rgb, wide = load_llava(), load_llava()
    widen_patch_embedding(wide)

    old_conv = rgb.model.vision_tower.embeddings.patch_embedding
    conv = wide.model.vision_tower.embeddings.patch_embedding
    assert conv.in_channels == NUM_BANDS and conv.weight.shape == (old_conv.out_channels, NUM_BANDS, 8, 8)
    assert conv.weight.dtype == old_conv.weight.dtype and conv.bias is None
    assert torch.equal(conv.weight[:, :3], old_conv.weight)
    assert torch.count_nonzero(conv.weight[:, 3:]) == 0
    assert wide.config.vision_config.num_channels == NUM_BANDS

    inputs = llava_inputs(llava_processor)
    nine = {**inputs, "pixel_values": with_extra_bands(inputs["pixel_values"])}
    expected = logits(rgb, inputs)
    got = logits(wide, nine)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)

    wide.save_pretrained(tmp_path)
    reloaded = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert reloaded.config.vision_config.num_channels == NUM_BANDS
    assert reloaded.model.vision_tower.embeddings.patch_embedding.in_channels == NUM_BANDS
    assert torch.equal(logits(reloaded, nine), got)

    # The extra bands do reach the model: once their weights move, the outputs do too. (Random weights: a constant
    # shift of all embedding dimensions would be cancelled by the tower's pre-LayerNorm.)
    with torch.no_grad():
        conv.weight[:, 3:].normal_(std=0.02, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(logits(wide, nine), expected, atol=1e-3)


def test_widened_clip_image_features_match_rgb():
    rgb, wide = load_clip(), load_clip()
    widen_patch_embedding(wide, num_channels=5)
    pixel_values = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    five = torch.cat([pixel_values, torch.randn(2, 2, IMAGE_SIZE, IMAGE_SIZE)], dim=1)
    with torch.no_grad():
        expected = rgb.get_image_features(pixel_values=pixel_values).pooler_output
        got = wide.get_image_features(pixel_values=five).pooler_output
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert wide.config.vision_config.num_channels == 5


def test_widening_is_refused_twice_and_below_three_channels():
    model = load_llava()
    with pytest.raises(EarthvlError, match="num_channels=2"):
        widen_patch_embedding(model, num_channels=2)
    widen_patch_embedding(model)
    with pytest.raises(EarthvlError, match="already takes 9 channels"):
        widen_patch_embedding(model)
    with pytest.raises(EarthvlError, match="already takes 9 channels"):
        widen_patch_embedding(model, num_channels=12)


def test_extra_band_weights_get_gradients(llava_processor):
    model = load_llava().train()
    widen_patch_embedding(model)
    inputs = llava_inputs(llava_processor)
    inputs["pixel_values"] = with_extra_bands(inputs["pixel_values"])
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    grad = model.model.vision_tower.embeddings.patch_embedding.weight.grad
    assert grad is not None
    # Every extra band, not just some, gets a gradient.
    assert (grad[:, 3:].abs().amax(dim=(0, 2, 3)) > 0).all()


def test_widening_keeps_dtype():
    model = LlavaForConditionalGeneration.from_pretrained(resolve_model("tiny-llava"), dtype=torch.bfloat16)
    widen_patch_embedding(model)
    interpolate_position_embeddings(model, LARGER)
    embeddings = vision_embeddings(model)
    assert embeddings.patch_embedding.weight.dtype == torch.bfloat16
    assert embeddings.position_embedding.weight.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------- band statistics


@pytest.fixture(scope="module")
def chatearthnet(tmp_path_factory):
    """The folder of a ChatEarthNet build (RGB and multispectral configs) of a three-tile sample world."""
    tmp = tmp_path_factory.mktemp("chatearthnet")
    world = generate_sample(tmp / "world", tiles=3, seed=0, progress=False)
    out = tmp / "built"
    configs = ["gpt35", "gpt35-multispectral"]
    build_chatearthnet(world.chatearthnet.root, out, configs=configs, num_proc=1, progress=False)
    return out


def all_splits(folder, config):
    return concatenate_datasets([load_split(str(folder), config, s) for s in ("train", "validation", "test")])


def numpy_statistics(rows) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std over every pixel of `rows`, decoding the three PNG columns directly."""
    planes = [
        np.concatenate([np.asarray(row[column].convert("RGB")) for column in ("image", "red_edge", "nir_swir")], -1)
        for row in rows
    ]
    pixels = np.concatenate([p.reshape(-1, NUM_BANDS) for p in planes]).astype(np.float64) / 255.0
    return pixels.mean(axis=0), pixels.std(axis=0)


def test_band_statistics_match_numpy(chatearthnet, caplog):
    dataset = all_splits(chatearthnet, "gpt35-multispectral")
    nodata = sum(dataset["is_nodata"])
    assert nodata > 0, "the sample world should hold no-data patches"
    with caplog.at_level(logging.INFO, logger="earthvl.models.vision"):
        mean, std = band_statistics(dataset)
    assert f"{nodata} of {len(dataset)} sampled rows skipped" in caplog.text

    expected_mean, expected_std = numpy_statistics(row for row in dataset if not row["is_nodata"])
    np.testing.assert_allclose(mean, expected_mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(std, expected_std, rtol=0, atol=1e-9)
    assert len(mean) == len(std) == NUM_BANDS
    # Skipping matters: the white and black no-data patches would shift the statistics.
    with_nodata_mean, _ = numpy_statistics(dataset)
    assert not np.allclose(mean, with_nodata_mean, atol=1e-3)


def test_band_statistics_on_a_seeded_subset(chatearthnet):
    dataset = all_splits(chatearthnet, "gpt35-multispectral")
    mean, std = band_statistics(dataset, max_rows=5, seed=1)
    chosen = np.random.default_rng(1).choice(len(dataset), size=5, replace=False)
    rows = [dataset[int(i)] for i in sorted(chosen)]
    expected_mean, expected_std = numpy_statistics(row for row in rows if not row["is_nodata"])
    np.testing.assert_allclose(mean, expected_mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(std, expected_std, rtol=0, atol=1e-9)
    assert band_statistics(dataset, max_rows=5, seed=1) == (mean, std)
    assert band_statistics(dataset, max_rows=5, seed=2) != (mean, std)


def test_band_statistics_refuse_rgb_only_data(chatearthnet):
    with pytest.raises(EarthvlError, match="band columns red_edge, nir_swir"):
        band_statistics(all_splits(chatearthnet, "gpt35"))


# ---------------------------------------------------------------------------------------------- pixel values


MEAN = [0.1 * (i + 1) for i in range(NUM_BANDS)]
STD = [0.05 * (i + 1) for i in range(NUM_BANDS)]


def test_multispectral_pixel_values_shape_and_normalisation():
    values = np.arange(NUM_BANDS, dtype=np.uint8) * 25 + 3
    arrays = [np.broadcast_to(values[:, None, None], (NUM_BANDS, h, w)).copy() for h, w in ((40, 60), (70, 50))]
    pixel_values = multispectral_pixel_values(arrays, 32, MEAN, STD)
    assert pixel_values.shape == (2, NUM_BANDS, 32, 32) and pixel_values.dtype == torch.float32
    expected = (torch.tensor(values / 255.0) - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(pixel_values, expected.float().view(1, -1, 1, 1).expand_as(pixel_values))


def test_multispectral_pixel_values_crop_the_centre():
    array = np.zeros((NUM_BANDS, 32, 64), dtype=np.uint8)
    array[:, :, 16:48] = 200  # exactly the centre 32 x 32 of a 32 px high image, which needs no resize
    pixel_values = multispectral_pixel_values([array], 32, MEAN, STD)[0]
    expected = (200 / 255.0 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(pixel_values, expected.float().view(-1, 1, 1).expand_as(pixel_values))


def test_multispectral_pixel_values_resize_bicubic_antialiased():
    array = np.random.default_rng(0).integers(0, 256, (NUM_BANDS, 64, 64), dtype=np.uint8)
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(array)[None].float(), size=(32, 32), mode="bicubic", antialias=True
    )[0].clamp(0, 255)
    expected = (resized / 255.0 - torch.tensor(MEAN).view(-1, 1, 1)) / torch.tensor(STD).view(-1, 1, 1)
    torch.testing.assert_close(multispectral_pixel_values([array], 32, MEAN, STD)[0], expected)


def test_multispectral_pixel_values_check_band_counts():
    array = np.zeros((NUM_BANDS, 8, 8), dtype=np.uint8)
    with pytest.raises(EarthvlError, match=r"shape \(9, 8, 8\).*\(3, H, W\)"):
        multispectral_pixel_values([array], 8, MEAN[:3], STD[:3])
    with pytest.raises(EarthvlError, match="mean has 9 values but std has 3"):
        multispectral_pixel_values([array], 8, MEAN, STD[:3])


# ---------------------------------------------------------------------------------------------- resolution


def test_interpolation_to_a_larger_size(llava_processor):
    model = load_llava()
    embeddings = vision_embeddings(model)
    old_weight = embeddings.position_embedding.weight.detach().clone()
    grid = LARGER // PATCH_SIZE

    interpolate_position_embeddings(model, LARGER, llava_processor)

    assert embeddings.position_embedding.weight.shape == (grid * grid + 1, old_weight.shape[1])
    assert torch.equal(embeddings.position_ids, torch.arange(grid * grid + 1)[None])
    assert (embeddings.num_patches, embeddings.num_positions, embeddings.image_size) == (144, 145, LARGER)
    assert model.config.vision_config.image_size == LARGER and model.config.image_seq_length == grid * grid
    assert torch.equal(embeddings.position_embedding.weight[0], old_weight[0])  # the class token's
    assert torch.allclose(embeddings.position_embedding.weight, geochat_interpolation(old_weight, grid), atol=1e-6)

    inputs = llava_inputs(llava_processor)
    assert inputs["pixel_values"].shape == (2, 3, LARGER, LARGER)
    assert ((inputs["input_ids"] == model.config.image_token_id).sum(dim=1) == grid * grid).all()
    assert logits(model, inputs).shape[:2] == inputs["input_ids"].shape
    with torch.no_grad():
        features = model.model.get_image_features(
            inputs["pixel_values"], vision_feature_layer=-2, vision_feature_select_strategy="default"
        ).pooler_output
    assert [f.shape[0] for f in features] == [grid * grid] * 2


def test_positions_are_interpolated_as_geochat_does():
    """GeoChat's 24 -> 36 patches per side, scaled down to 4 -> 6: bicubic with aligned corners, the class token
    apart; not transformers' on-the-fly `interpolate_pos_encoding` (align_corners=False)."""
    weight = torch.randn(1 + 4 * 4, 5, generator=torch.Generator().manual_seed(0))
    resized = interpolate_positions(weight, 6)
    assert resized.shape == (1 + 6 * 6, 5) and torch.equal(resized[0], weight[0])
    assert torch.allclose(resized, geochat_interpolation(weight, 6), atol=1e-6)
    grid = weight[1:].T.reshape(1, 5, 4, 4)
    unaligned = torch.nn.functional.interpolate(grid, size=6, mode="bicubic", align_corners=False).reshape(5, 36).T
    assert not torch.allclose(resized[1:], unaligned, atol=1e-3)
    # Aligned corners: the grid's corner positions keep their embeddings exactly.
    corners = [(0, 0), (0, 3), (3, 0), (3, 3)]
    assert all(torch.allclose(resized[1 + 6 * (r * 5 // 3) + c * 5 // 3], weight[1 + 4 * r + c], atol=1e-6) for r, c in corners)
    with pytest.raises(EarthvlError, match="15 patch positions do not form a square grid"):
        interpolate_positions(weight[:-1], 6)


def test_interpolation_to_the_same_size_changes_nothing(llava_processor):
    model = load_llava()
    inputs = llava_inputs(llava_processor)
    before_logits = logits(model, inputs)
    before_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    position_embedding = vision_embeddings(model).position_embedding

    interpolate_position_embeddings(model, IMAGE_SIZE, llava_processor)

    assert vision_embeddings(model).position_embedding is position_embedding
    state = model.state_dict()
    assert state.keys() == before_state.keys()
    assert all(torch.equal(state[name], tensor) for name, tensor in before_state.items())
    again = llava_inputs(llava_processor)
    assert all(torch.equal(again[key], inputs[key]) for key in inputs)
    assert torch.equal(logits(model, again), before_logits)
    assert model.config.vision_config.image_size == IMAGE_SIZE


@pytest.mark.parametrize("size", [100, 4, 0])
def test_interpolation_refuses_sizes_off_the_patch_grid(size):
    model = load_llava()
    with pytest.raises(EarthvlError, match=f"image_size={size} .*patch size 8"):
        interpolate_position_embeddings(model, size)
    assert vision_embeddings(model).image_size == IMAGE_SIZE


def test_interpolated_llava_saves_and_reloads(llava_processor, tmp_path):
    model = load_llava()
    interpolate_position_embeddings(model, LARGER, llava_processor)
    model.save_pretrained(tmp_path)
    llava_processor.save_pretrained(tmp_path)

    reloaded = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert reloaded.config.vision_config.image_size == LARGER
    assert torch.equal(
        vision_embeddings(reloaded).position_embedding.weight, vision_embeddings(model).position_embedding.weight
    )
    inputs = llava_inputs(processor)
    assert inputs["pixel_values"].shape[-2:] == (LARGER, LARGER)
    assert torch.equal(logits(reloaded, inputs), logits(model, inputs))


@pytest.mark.parametrize("bare", [False, True], ids=["clip-processor", "image-processor"])
def test_interpolated_clip_with_its_processor(bare):
    model = load_clip()
    processor = AutoProcessor.from_pretrained(resolve_model("tiny-clip"))
    interpolate_position_embeddings(model, LARGER, processor.image_processor if bare else processor)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 100, 3), dtype=np.uint8))
    pixel_values = processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, LARGER, LARGER)
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixel_values).pooler_output
    assert features.shape == (1, model.config.projection_dim)
    assert model.config.vision_config.image_size == LARGER
