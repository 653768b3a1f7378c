"""CLIP batches of stable shapes: filler text sequences pad a batch to a fixed count and leave the loss and its
gradients as they were; the padding mask is not needed by the causal text tower; the trainer's per-step FLOP count
does not recount the parameters; batched tokenisation and sorted text embedding give what one text at a time gives."""

import pytest
import torch
from transformers import AutoTokenizer, CLIPModel, Trainer, TrainingArguments

from earthvl.errors import EarthvlError
from earthvl.models.clip import LONG_TEXT, TextChunker, mean_embeddings, text_embeddings, text_limit
from earthvl.model_names import resolve_model
from earthvl.train.clip import ClipTrainer
from earthvl.train.collate import ClipCollator
from earthvl.train.losses import contrastive_loss

SENTENCE = "In the top left part, there is a large fraction of grass, a medium part of crop and a small amount of tree."


def caption(sentences):
    return " ".join([SENTENCE] * sentences)


@pytest.fixture(scope="module")
def tiny():
    path = resolve_model("tiny-clip")
    model = CLIPModel.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, TextChunker(tokenizer, text_limit(model, tokenizer))


def examples(sentences_per_caption, seed=0):
    """One image per entry, with one caption of that many sentences (or a list of captions' sentence counts)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for counts in sentences_per_caption:
        counts = counts if isinstance(counts, list) else [counts]
        rows.append({"pixel_values": torch.randn(3, 64, 64, generator=generator), "texts": [caption(n) for n in counts]})
    return rows


def test_every_batch_has_the_same_shape_whatever_the_captions_length(tiny):
    _, chunker = tiny
    batches = [examples([1] * 8), examples([12] * 8), examples([1, 3, 7, 12, 2, 5, [1, 9], 4]), examples([[1, 1, 1]] * 8)]
    collate = ClipCollator(chunker, sequence_multiple=64)
    shapes = {tuple(collate(batch)["input_ids"].shape) for batch in batches}
    assert shapes == {(64, 77)}
    # as many sequences as the captions need, the old way: a new shape at each batch
    assert len({tuple(ClipCollator(chunker)(batch)["input_ids"].shape) for batch in batches}) == 4
    # more sequences than the multiple: the next multiple
    large = collate(examples([12] * 16))
    real = len(large["sequence_caption"])
    assert real > 64 and large["input_ids"].shape == (-(-real // 64) * 64, 77)
    with pytest.raises(EarthvlError, match="text_sequence_multiple=0"):
        ClipCollator(chunker, sequence_multiple=0)


def test_fillers_follow_the_real_sequences_as_empty_texts(tiny):
    _, chunker = tiny
    batch = ClipCollator(chunker, sequence_multiple=16)(examples([3, [1, 2]]))
    real = len(batch["sequence_caption"])
    assert batch["caption_image"].tolist() == [0, 1, 1]
    assert real == len(chunker.fit_all([caption(3), caption(1), caption(2)])[0].sequences) + 2 < 16
    ids, mask = batch["input_ids"], batch["attention_mask"]
    tokenizer = chunker.tokenizer
    assert (ids[real:, :2] == torch.tensor([tokenizer.bos_token_id, tokenizer.eos_token_id])).all()
    assert (mask[real:].sum(1) == 2).all() and (mask[:real].sum(1) > 2).all()


def _loss_and_gradients(trainer, batch):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}


def _masked_reference(model, batch):
    """The loss as computed before stable shapes: no fillers, every sequence read with its padding mask."""
    outputs = model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    captions = mean_embeddings(outputs.text_embeds, batch["sequence_caption"], len(batch["caption_image"]))
    texts = mean_embeddings(captions, batch["caption_image"], len(outputs.image_embeds))
    return contrastive_loss(outputs.image_embeds, texts, model.logit_scale)


def test_the_loss_and_gradients_with_fillers_equal_those_without(tiny, tmp_path, monkeypatch):
    model, chunker = tiny
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", remove_unused_columns=False)
    trainer = ClipTrainer(model=model, args=args, data_collator=ClipCollator(chunker))
    rows = examples([1, 3, [2, 5], 7, 2, [1, 1]], seed=1)
    tight = ClipCollator(chunker)(rows)
    padded = ClipCollator(chunker, sequence_multiple=32)(rows)
    assert len(tight["input_ids"]) < 32 == len(padded["input_ids"])
    loss, gradients = _loss_and_gradients(trainer, tight)
    padded_loss, padded_gradients = _loss_and_gradients(trainer, padded)
    assert torch.allclose(padded_loss, loss, atol=1e-6)
    assert gradients.keys() == padded_gradients.keys() and any(n.startswith("text_model.") for n in gradients)
    for name, gradient in gradients.items():
        assert torch.allclose(padded_gradients[name], gradient, atol=1e-6, rtol=1e-4), name
    # the step's FLOP estimate is transformers' own, with the parameters counted once instead of at every step
    counted = []
    count = type(model).num_parameters
    monkeypatch.setattr(type(model), "num_parameters", lambda self, **kw: counted.append(kw) or count(self, **kw))
    assert [trainer.floating_point_ops(padded) for _ in range(3)] == [Trainer.floating_point_ops(trainer, padded)] * 3
    assert len(counted) == 2  # once for earthvl's three, once for transformers' one
    # and the same loss as reading each sequence with its padding mask, at the longest sequence's width
    trainer.model.zero_grad()
    width = int(tight["attention_mask"].sum(1).max())
    unpadded = {**tight, "input_ids": tight["input_ids"][:, :width], "attention_mask": tight["attention_mask"][:, :width]}
    assert width < 77 and torch.allclose(_masked_reference(model, unpadded), loss, atol=1e-6)


@pytest.mark.parametrize("mode", LONG_TEXT)
def test_tokenising_texts_together_fits_each_as_alone(tiny, mode):
    _, base = tiny
    chunker = TextChunker(base.tokenizer, 77, mode=mode, max_chunks=3)
    texts = [caption(1), caption(9), "", "No full stop here", caption(4) + " Trailing words"]
    together = chunker.fit_all(texts)
    assert [fit.sequences for fit in together] == [chunker.fit(text).sequences for text in texts]
    assert [(fit.tokens, fit.kept) for fit in together] == [(chunker.fit(t).tokens, chunker.fit(t).kept) for t in texts]
    assert chunker.fit_all([]) == []


def test_text_embeddings_in_sorted_batches_equal_one_text_at_a_time(tiny):
    model, chunker = tiny
    model.eval()
    texts = [caption(1), "grass", caption(6), "a photo of water.", caption(2), caption(3) + " Tree."]
    together = text_embeddings(model, chunker, texts, batch_size=2)
    alone = torch.cat([text_embeddings(model, chunker, [text]) for text in texts])
    assert torch.allclose(together, alone, atol=1e-5)
    # each alone: one sequence read without any padding, so no mask was ever in play
    with torch.no_grad():
        ids = torch.tensor([chunker("grass")[0]])
        plain = model.get_text_features(input_ids=ids).pooler_output
    assert torch.allclose(alone[1], torch.nn.functional.normalize(plain, dim=-1)[0], atol=1e-5)
