"""CLIP's text side and loss: fitting long captions into 77 tokens, embedding averages, and the contrastive loss over
the global batch (two real processes against one)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import AutoTokenizer, CLIPModel
from transformers.models.clip.modeling_clip import image_text_contrastive_loss as clip_loss

from earthvl.errors import EarthvlError
from earthvl.models.clip import TextChunker, mean_embeddings, text_embeddings, text_limit, zero_shot_classifier
from earthvl.model_names import resolve_model
from earthvl.train.losses import contrastive_loss

SENTENCES = [
    "This image is dominated by crop, which covers a large amount of the scene, mostly in the top left part.",
    "The top left part contains a large part of crop and a medium quantity of grass.",
    "In the top right part, there is a large fraction of grass, a medium part of crop and an extra small amount of tree.",
    "In the bottom left part, there is a large fraction of grass and a medium fraction of crop.",
    "Taken together, the scene depicts an agricultural landscape.",
]
CAPTION = " ".join(SENTENCES)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model("tiny-clip"))


def bodies(tokenizer, sequences):
    """The sequences without the tokenizer's <s> ... </s>, after checking that each has them."""
    for ids in sequences:
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    return [ids[1:-1] for ids in sequences]


def test_chunks_keep_every_token_and_split_at_sentence_ends(tokenizer):
    chunker = TextChunker(tokenizer, 40)
    sequences = chunker(CAPTION)
    assert len(sequences) > 2 and all(len(ids) <= 40 for ids in sequences)
    pieces = bodies(tokenizer, sequences)
    assert sum(pieces, []) == sum(tokenizer([SENTENCES[0]] + [" " + s for s in SENTENCES[1:]], add_special_tokens=False)["input_ids"], [])
    decoded = [tokenizer.decode(piece).strip() for piece in pieces]
    assert all(text.endswith(".") for text in decoded[:-1])  # no sentence under 38 tokens was cut
    assert chunker.report([CAPTION]) == {
        "texts": 1, "max_tokens": 40, "longer_than_limit": 1.0, "texts_cut": 0.0, "tokens_dropped": 0.0,
        "sequences_per_text": float(len(sequences)),
    }


def test_a_sentence_longer_than_the_limit_is_cut_into_pieces(tokenizer):
    long_sentence = " ".join(["grass"] * 50) + "."
    pieces = bodies(tokenizer, TextChunker(tokenizer, 12)(long_sentence))
    assert [len(piece) for piece in pieces[:-1]] == [10] * (len(pieces) - 1)
    assert sum(pieces, []) == tokenizer(long_sentence, add_special_tokens=False)["input_ids"]


def test_first_sentences_and_truncate_keep_the_start(tokenizer):
    limit = 60
    first = TextChunker(tokenizer, limit, "first-sentences")(CAPTION)
    assert len(first) == 1 and len(first[0]) <= limit
    assert tokenizer.decode(bodies(tokenizer, first)[0]).strip() == " ".join(SENTENCES[:2])
    truncated = TextChunker(tokenizer, limit, "truncate")(CAPTION)
    assert truncated == [tokenizer(CAPTION, truncation=True, max_length=limit)["input_ids"]]
    report = TextChunker(tokenizer, limit, "truncate").report([CAPTION, "Grass."])
    total, short = (len(ids) for ids in tokenizer([CAPTION, "Grass."], add_special_tokens=False)["input_ids"])
    assert report["texts_cut"] == 0.5 and report["longer_than_limit"] == 0.5
    assert report["tokens_dropped"] == pytest.approx((total - (limit - 2)) / (total + short))


def test_max_chunks_cuts_and_reports_the_rest(tokenizer):
    chunker = TextChunker(tokenizer, 20, max_chunks=2)
    assert len(chunker(CAPTION)) == 2
    assert chunker.report([CAPTION])["tokens_dropped"] > 0.5


def test_bad_settings_are_refused(tokenizer):
    with pytest.raises(EarthvlError, match="long_text='summary'"):
        TextChunker(tokenizer, 77, "summary")
    with pytest.raises(EarthvlError, match="no room"):
        TextChunker(tokenizer, 2)


def test_text_embeddings_average_the_chunks():
    model = CLIPModel.from_pretrained(resolve_model("tiny-clip")).eval()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-clip"))
    chunker = TextChunker(tokenizer, text_limit(model, tokenizer))
    assert chunker.limit == 75
    sequences = chunker(CAPTION + " " + CAPTION)
    assert len(sequences) >= 2
    with torch.no_grad():
        parts = [model.get_text_features(input_ids=torch.tensor([ids])).pooler_output[0] for ids in sequences]
    expected = torch.nn.functional.normalize(sum(torch.nn.functional.normalize(p, dim=0) for p in parts), dim=0)
    assert torch.allclose(text_embeddings(model, chunker, [CAPTION + " " + CAPTION])[0], expected, atol=1e-5)
    classifier = zero_shot_classifier(model, chunker, ["grass", "water"], ["a photo of {c}.", "{c} from above"])
    grass = text_embeddings(model, chunker, ["a photo of grass.", "grass from above"])
    assert torch.allclose(classifier[0], torch.nn.functional.normalize(grass.sum(0), dim=0), atol=1e-5)


def test_mean_embeddings_normalise_before_and_after_averaging():
    rows = torch.tensor([[3.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    means = mean_embeddings(rows, torch.tensor([0, 0, 1]), 2)
    assert torch.allclose(means, torch.tensor([[2**-0.5, 2**-0.5], [2**-0.5, 2**-0.5]]))


def embeddings(n=8, dim=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    return images, texts


def test_contrastive_loss_is_clips_own_on_one_process():
    images, texts = embeddings()
    scale = torch.tensor(2.0)
    expected = clip_loss(scale.exp() * texts @ images.T)
    assert torch.allclose(contrastive_loss(images, texts, scale), expected, atol=1e-6)
    # the temperature is capped at 100, as CLIP does
    assert torch.allclose(contrastive_loss(images, texts, torch.tensor(9.0)), clip_loss(100 * texts @ images.T), atol=1e-5)


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    images, texts = embeddings()
    half = len(images) // world
    local_images = images[rank * half : (rank + 1) * half].clone().requires_grad_()
    local_texts = texts[rank * half : (rank + 1) * half].clone().requires_grad_()
    loss = contrastive_loss(local_images, local_texts, torch.tensor(2.0))
    loss.backward()
    torch.save({"loss": loss.detach(), "images": local_images.grad, "texts": local_texts.grad}, out / f"{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_train_the_objective_of_one_global_batch(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_worker, args=(2, port, tmp_path), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    images, texts = embeddings()
    images.requires_grad_()
    texts.requires_grad_()
    loss = contrastive_loss(images, texts, torch.tensor(2.0))
    loss.backward()
    # DDP averages the processes' gradients: the mean of the local losses and the local gradients divided by the
    # world size are the global ones.
    assert torch.allclose(sum(r["loss"] for r in results) / 2, loss.detach(), atol=1e-6)
    assert torch.allclose(torch.cat([r["images"] for r in results]) / 2, images.grad, atol=1e-6)
    assert torch.allclose(torch.cat([r["texts"] for r in results]) / 2, texts.grad, atol=1e-6)
