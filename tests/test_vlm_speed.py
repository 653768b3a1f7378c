"""The speed levers of VLM training, checked for exactness on CPU: padding-free batches (rows packed into one
sequence with per-row attention) give the padded batch's loss and gradients, the loss scored through TRL's fused LM
head equals the full-logits loss, the frozen vision tower runs without autograd, and the micro-batch chosen from a
memory budget (with a fake memory reader) keeps the batch per optimizer step."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from peft import get_peft_model
from safetensors.torch import load_file
from transformers import LlavaModel
from trl import SFTConfig
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

import earthvl.models.attention as attention
import earthvl.train.memory as memory
from earthvl.builders.chatearthnet.build import build_chatearthnet
from earthvl.data import load_split
from earthvl.errors import EarthvlError
from earthvl.model_names import resolve_model
from earthvl.models.attention import VARLEN_ATTENTION, use_varlen_attention
from earthvl.models.vlm import load_vlm, lora_config
from earthvl.sample import generate_sample
from earthvl.train.collate import IGNORE_INDEX, flatten_rows
from earthvl.train.conversations import to_conversations
from earthvl.train.memory import GIB, choose_micro_batch
from earthvl.train.vlm import VlmModelArguments, VlmScriptArguments, VlmTrainer, train_vlm, vision_tower_without_autograd
from earthvl.training_output import MEMORY_BUDGET_FILE

ROWS = [0, 5, 9, 20]  # different lengths


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm-speed")
    world = generate_sample(root / "world", tiles=12, seed=5, gaia_images=8, progress=False)
    build_chatearthnet(world.chatearthnet.root, root / "cen", configs="gpt35", progress=False, num_proc=1)
    return root


@pytest.fixture(scope="module")
def rows(data):
    return to_conversations(load_split(str(data / "cen"), "gpt35", "train"))[0]


def padded_batch(rows, assistant_only_loss=True):
    processor = load_vlm(resolve_model("tiny-llava"))[1]
    collator = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=assistant_only_loss)
    return dict(collator([rows[i] for i in ROWS]))


def adapted_model(attn_implementation="sdpa", **lora):
    torch.manual_seed(0)
    model, _ = load_vlm(resolve_model("tiny-llava"), dtype=torch.float32, attn_implementation=attn_implementation)
    # init_lora_weights=False: B is random too, so every LoRA weight gets a gradient in the first pass
    peft = get_peft_model(model, lora_config(dropout=0.0, init_lora_weights=False, **lora))
    peft.train()
    return peft


def loss_and_gradients(model, batch, num_items):
    model.zero_grad(set_to_none=True)
    loss = model(**batch, num_items_in_batch=num_items, use_cache=False).loss
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def labelled(batch):
    """What transformers' Trainer divides the loss by: labels after the shift."""
    return (batch["labels"][..., 1:] != IGNORE_INDEX).sum()


# --- padding-free batches ----------------------------------------------------------------------------------------


def test_flatten_rows_concatenates_the_rows_and_restarts_positions(rows):
    batch = padded_batch(rows, assistant_only_loss=False)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    flat = flatten_rows(batch)
    assert "attention_mask" not in flat and flat["input_ids"].shape == (1, sum(lengths))
    assert flat["cu_seq_lens_q"].tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()]
    assert flat["cu_seq_lens_q"].dtype == torch.int32 and flat["max_length_q"] == max(lengths)
    assert torch.equal(flat["pixel_values"], batch["pixel_values"])
    offset = 0
    for row, length in enumerate(lengths):
        span = slice(offset, offset + length)
        assert flat["position_ids"][0, span].tolist() == list(range(length))
        assert torch.equal(flat["input_ids"][0, span], batch["input_ids"][row, :length])
        assert flat["labels"][0, offset] == IGNORE_INDEX  # a row's first token is never a target
        assert torch.equal(flat["labels"][0, offset + 1 : offset + length], batch["labels"][row, 1:length])
        offset += length


@pytest.mark.parametrize("assistant_only_loss", [True, False])
@pytest.mark.parametrize("implementation", [VARLEN_ATTENTION, "sdpa"])
def test_padding_free_batch_has_the_padded_batch_loss_and_gradients(rows, implementation, assistant_only_loss):
    # "sdpa": transformers' own packed-sequence mask (from position_ids that restart, when there is no cache)
    batch = padded_batch(rows, assistant_only_loss)
    model = adapted_model(train_projector=True)
    loss, gradients = loss_and_gradients(model, batch, labelled(batch))
    if implementation == VARLEN_ATTENTION:
        assert use_varlen_attention(model.get_base_model()) == VARLEN_ATTENTION
        assert model.config.vision_config._attn_implementation == "sdpa"
    packed_loss, packed_gradients = loss_and_gradients(model, flatten_rows(batch), labelled(batch))
    assert packed_loss == pytest.approx(loss, rel=1e-5)
    assert any("multi_modal_projector" in name for name in gradients)
    for name, gradient in gradients.items():
        torch.testing.assert_close(packed_gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_without_the_row_start_labels_rows_would_be_trained_across(rows):
    """The control for the -100 at each row's start: with every token labelled, a packed batch that kept them would
    train each row's last token to predict the next row's first."""
    batch = padded_batch(rows, assistant_only_loss=False)
    model = adapted_model()
    use_varlen_attention(model.get_base_model())
    flat = flatten_rows(batch)
    leaky = {**flat, "labels": batch["input_ids"][batch["attention_mask"].bool()].unsqueeze(0)}
    assert loss_and_gradients(model, leaky, labelled(batch))[0] != pytest.approx(
        loss_and_gradients(model, flat, labelled(batch))[0], rel=1e-3
    )


def test_varlen_kernel_gets_the_rows_in_its_layout(rows, monkeypatch):
    """The CUDA kernel path, with a CPU stand-in for `varlen_attn` that checks its arguments."""
    calls = []

    def stand_in(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1)):
        assert q.dim() == 3 and q.shape == k.shape == v.shape and window_size == (-1, 0)
        assert cu_q.dtype == torch.int32 and torch.equal(cu_q, cu_k) and max_q == max_k == int(cu_q.diff().max())
        calls.append(len(cu_q) - 1)
        bounds = cu_q.tolist()
        return torch.cat([
            F.scaled_dot_product_attention(*(x[s:e].transpose(0, 1) for x in (q, k, v)), is_causal=True, scale=scale).transpose(0, 1)
            for s, e in zip(bounds[:-1], bounds[1:])
        ])

    batch = padded_batch(rows)
    model = adapted_model()
    loss, gradients = loss_and_gradients(model, batch, labelled(batch))
    use_varlen_attention(model.get_base_model())
    monkeypatch.setattr(attention, "varlen_attn", stand_in)
    monkeypatch.setattr(attention, "_kernel_applies", lambda query, dropout: True)
    packed_loss, packed_gradients = loss_and_gradients(model, flatten_rows(batch), labelled(batch))
    assert calls == [len(ROWS)] * model.config.text_config.num_hidden_layers
    assert packed_loss == pytest.approx(loss, rel=1e-5)
    for name, gradient in gradients.items():
        torch.testing.assert_close(packed_gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_padded_batches_on_varlen_attention_keep_their_mask(rows):
    """Eval and generation batches (padded, no row boundaries) on a model switched to per-row attention."""
    batch = padded_batch(rows)
    model = adapted_model()
    loss = loss_and_gradients(model, batch, labelled(batch))[0]
    use_varlen_attention(model.get_base_model())
    assert loss_and_gradients(model, batch, labelled(batch))[0] == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize("padding_free", [False, True])
def test_trainer_loss_on_labelled_positions_is_the_full_logits_loss(data, rows, tmp_path, padding_free):
    """TRL's fused LM head scores only labelled positions (all of them, masked, off Triton devices): the trainer's
    loss, padded or padding-free, is the model's own loss over the full logits."""
    model, processor = load_vlm(resolve_model("tiny-llava"), dtype=torch.float32)
    script, training, _ = vlm_arguments(data, tmp_path, padding_free=padding_free, remove_unused_columns=False)
    trainer = VlmTrainer(
        model=model, args=training, train_dataset=rows, processing_class=processor,
        peft_config=lora_config(dropout=0.0, init_lora_weights=False),
    )
    batch = padded_batch(rows)
    with torch.no_grad():
        full = trainer.model(**batch, use_cache=False).loss
        fused = trainer.compute_loss(trainer.model, flatten_rows(batch) if padding_free else dict(batch))
    assert fused.item() == pytest.approx(full.item(), rel=1e-5)


# --- the frozen vision tower -------------------------------------------------------------------------------------


def projector_inputs(model):
    seen = []
    projector = model.get_base_model().model.multi_modal_projector
    projector.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    return seen


@pytest.mark.parametrize("train_projector", [False, True])
def test_frozen_vision_tower_runs_without_autograd_and_gradients_stay(rows, train_projector):
    batch = padded_batch(rows)
    model = adapted_model(train_projector=train_projector)
    model.enable_input_require_grads()  # what activation checkpointing and k-bit preparation do
    seen = projector_inputs(model)
    _, gradients = loss_and_gradients(model, batch, labelled(batch))
    assert seen[-1].grad_fn is not None  # the tower's activations were kept for a useless backward
    assert vision_tower_without_autograd(model)
    _, without = loss_and_gradients(model, batch, labelled(batch))
    assert seen[-1].grad_fn is None and not seen[-1].requires_grad
    assert without.keys() == gradients.keys() and any("multi_modal_projector" in n for n in without) == train_projector
    for name, gradient in gradients.items():
        torch.testing.assert_close(without[name], gradient, rtol=1e-5, atol=1e-7, msg=name)


def test_a_trained_patch_embedding_keeps_autograd_in_the_tower(rows):
    model = adapted_model(train_patch_embedding=True)
    assert not vision_tower_without_autograd(model)
    batch = padded_batch(rows)
    _, gradients = loss_and_gradients(model, batch, labelled(batch))
    assert any("patch_embedding" in name and gradient.abs().sum() > 0 for name, gradient in gradients.items())


# --- the micro-batch from a memory budget ------------------------------------------------------------------------


def linear_memory(base, per_row, log=None):
    def measure(size):
        if log is not None:
            log.append(size)
        return int((base + per_row * size) * GIB)

    return measure


def test_budget_picks_the_largest_fitting_divisor_in_few_probes():
    log = []
    size, probes = choose_micro_batch(48, int(20 * GIB), linear_memory(4, 1.5, log), extra_bytes=GIB)
    assert size == 8  # 4 + 1.5 x 8 + 1 = 17 GiB; the next divisor, 12, needs 23
    assert log == [1, 2, 8] and [p.fits for p in probes] == [True, True, True]
    assert choose_micro_batch(16, int(100 * GIB), linear_memory(4, 1.5))[0] == 16


def test_budget_steps_down_when_the_extrapolation_was_too_hopeful():
    # activations grow faster than linearly: the fit of 1 and 2 predicts 16 fits, it does not; 8 does
    log = []
    measure = lambda size: (log.append(size), int((2 + 0.5 * size + 0.05 * size**2) * GIB))[1]
    size, probes = choose_micro_batch(16, int(13 * GIB), measure)
    assert size == 8 and log == [1, 2, 16, 8] and [p.fits for p in probes] == [True, True, False, True]


def test_budget_treats_out_of_memory_as_not_fitting_and_fails_clearly():
    measure = lambda size: None if size > 2 else int(size * GIB)
    assert choose_micro_batch(8, int(100 * GIB), measure)[0] == 2
    with pytest.raises(EarthvlError, match="memory_budget_gb 3: a micro-batch of 1 row.* needs 4.00 GiB"):
        choose_micro_batch(8, int(3 * GIB), linear_memory(3, 0.5), extra_bytes=GIB // 2)


def vlm_arguments(data, out, model=None, **training):
    script = VlmScriptArguments(datasets=[f"{data / 'cen'}:gpt35"], eval_split=None)
    config = dict(output_dir=str(out), per_device_train_batch_size=4, max_steps=2, learning_rate=0.5, optim="sgd",
                  logging_steps=50, save_strategy="no", report_to=[], use_cpu=True, activation_checkpointing=True,
                  seed=0, max_length=None, assistant_only_loss=True, bf16=False)
    # unquantised float32: a QLoRA adapter is bf16, where float noise flips roundings
    model = {"load_in_4bit": False, **(model or {})}
    model_args = VlmModelArguments(model_name_or_path="tiny-llava", dtype="float32", lora_dropout=0.0, **model)
    return script, SFTConfig(**{**config, **training}), model_args


def trained_batches(monkeypatch):
    """Per training forward: rows, tokens, whether it had an attention mask, whether the projector input kept
    autograd history."""
    seen = []
    features = LlavaModel.get_image_features

    def record(self, pixel_values, **kwargs):
        output = features(self, pixel_values, **kwargs)
        seen.append({"rows": len(pixel_values), "history": output.pooler_output[0].grad_fn is not None})
        return output

    monkeypatch.setattr(LlavaModel, "get_image_features", record)
    return seen


def test_padding_free_training_matches_padded_training(data, tmp_path, monkeypatch):
    # SGD, so that equal gradients give equal adapters (Adam would magnify float noise in near-zero gradients)
    seen = trained_batches(monkeypatch)
    padded = train_vlm(*vlm_arguments(data, tmp_path / "padded", {"vision_no_grad": False}))
    assert all(batch["history"] for batch in seen)
    seen.clear()
    flat = train_vlm(*vlm_arguments(data, tmp_path / "flat", padding_free=True))
    assert [batch["rows"] for batch in seen] == [4, 4] and not any(batch["history"] for batch in seen)
    assert json.loads((tmp_path / "flat" / "training_args.json").read_text())["padding_free"] is True
    reference, packed = (load_file(str(tmp_path / run / "adapter_model.safetensors")) for run in ("padded", "flat"))
    assert max(reference[name].abs().max() for name in reference if "lora_B" in name) > 1e-3  # LoRA B starts at 0
    for name, weight in reference.items():
        torch.testing.assert_close(packed[name], weight, rtol=1e-4, atol=1e-5, msg=name)
    assert flat.state.log_history[-1]["train_loss"] == pytest.approx(padded.state.log_history[-1]["train_loss"], rel=1e-5)


class FakeMemory:
    """Bytes as if each row in a pass took 1 GiB over 3 GiB of weights; counts rows through the vision tower."""

    def __init__(self, seen):
        self.seen, self.start = seen, 0

    def reset(self):
        self.start = len(self.seen)

    def peak(self):
        return int((3 + sum(batch["rows"] for batch in self.seen[self.start :])) * GIB)


def test_memory_budget_picks_the_micro_batch_and_keeps_the_batch_per_step(data, tmp_path, monkeypatch):
    seen = trained_batches(monkeypatch)
    monkeypatch.setattr(memory, "default_memory_reader", lambda: FakeMemory(seen))
    script, training, model_args = vlm_arguments(data, tmp_path / "budget", per_device_train_batch_size=8)
    script.memory_budget_gb = 7.5  # 3 + 4 rows fits, 3 + 8 does not
    train_vlm(script, training, model_args)
    choice = json.loads((tmp_path / "budget" / "memory_budget.json").read_text())
    assert (choice["micro_batch"], choice["gradient_accumulation_steps"], choice["global_batch"]) == (4, 2, 8)
    assert [(p["micro_batch"], p["peak_gb"]) for p in choice["probes"]] == [(1, 4), (2, 5), (4, 7)]
    args = json.loads((tmp_path / "budget" / "training_args.json").read_text())
    assert (args["per_device_train_batch_size"], args["gradient_accumulation_steps"]) == (4, 2)
    assert [batch["rows"] for batch in seen[-4:]] == [4, 4, 4, 4]  # 2 steps of 2 x 4 rows after the probes
    # the probes leave no trace: the same adapter as a run configured with that micro-batch from the start
    train_vlm(*vlm_arguments(data, tmp_path / "direct", per_device_train_batch_size=4, gradient_accumulation_steps=2))
    probed, direct = (load_file(str(tmp_path / run / "adapter_model.safetensors")) for run in ("budget", "direct"))
    for name, weight in direct.items():
        torch.testing.assert_close(probed[name], weight, rtol=1e-5, atol=1e-6, msg=name)


def test_a_resumed_run_keeps_the_recorded_micro_batch(tmp_path):
    recorded = {"budget_gb": 16.0, "global_batch": 16, "micro_batch": 8, "gradient_accumulation_steps": 2}
    (tmp_path / MEMORY_BUDGET_FILE).write_text(json.dumps(recorded))
    trainer = SimpleNamespace(
        args=SimpleNamespace(output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=4),
        memory_budget_gb=16.0, _resuming=True,
    )
    trainer._global_batch = lambda: memory.MemoryBudget._global_batch(trainer)
    assert memory.MemoryBudget._recorded_choice(trainer) == recorded
    trainer.memory_budget_gb = 20.0  # another budget: probe again
    assert memory.MemoryBudget._recorded_choice(trainer) is None
    trainer.memory_budget_gb, trainer._resuming = 16.0, False  # a fresh run probes again
    assert memory.MemoryBudget._recorded_choice(trainer) is None


def test_memory_budget_without_a_gpu_is_a_clear_error(data, tmp_path):
    script, training, model_args = vlm_arguments(data, tmp_path / "cpu")
    script.memory_budget_gb = 16
    with pytest.raises(EarthvlError, match="memory_budget_gb needs a CUDA device"):
        train_vlm(script, training, model_args)


def test_packing_is_refused_with_the_alternative_named(data, tmp_path):
    with pytest.raises(EarthvlError, match="use padding_free"):
        train_vlm(*vlm_arguments(data, tmp_path / "packing", packing=True))
