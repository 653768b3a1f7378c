"""Per-row causal attention over padding-free batches: several rows packed into one sequence attend only within
themselves, at the cost of their own lengths (no block-diagonal mask over the whole packed sequence).

`VARLEN_ATTENTION` is registered with transformers' `AttentionInterface` (and its mask interface) on import, so a
language model switched to it with `use_varlen_attention` reads the row boundaries that a padding-free batch carries
(`cu_seq_lens_q` and `max_length_q`, the names transformers' flash-attention path uses; or, failing those,
`position_ids` that restart at 0). On CUDA in half precision it calls torch's flash-attention varlen kernel
(`torch.nn.attention.varlen.varlen_attn`, torch >= 2.10); elsewhere it runs `scaled_dot_product_attention` row by
row. Batches without row boundaries (padded rows, generation) take transformers' SDPA path unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

VARLEN_ATTENTION = "earthvl_varlen"
FLASH_ATTENTION_PREFIX = "flash_attention"
"""transformers' own flash-attention implementations read the same row boundaries: kept when a model uses one."""

try:
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # torch < 2.10
    varlen_attn = None


def _causal_flag() -> dict[str, Any] | None:
    """How this torch's `varlen_attn` asks for causal attention: `window_size=(-1, 0)` (torch >= 2.11) or
    `is_causal=True` (torch 2.10); None if it has neither (then the per-row path runs)."""
    if varlen_attn is None:
        return None
    parameters = inspect.signature(varlen_attn).parameters
    if "window_size" in parameters:
        return {"window_size": (-1, 0)}
    return {"is_causal": True} if "is_causal" in parameters else None


CAUSAL_FLAG = _causal_flag()


def row_boundaries(position_ids: torch.Tensor) -> torch.Tensor | None:
    """Offsets of the rows packed into a one-row `position_ids` (each row restarting at 0), as int32 `cu_seq_lens`;
    None when it holds a single row."""
    starts = (position_ids[0] == 0).nonzero().flatten()
    if len(starts) < 2:
        return None
    end = torch.tensor([position_ids.shape[1]], device=starts.device)
    return torch.cat([starts, end]).to(torch.int32)


def _kernel_applies(query: torch.Tensor, dropout: float) -> bool:
    return CAUSAL_FLAG is not None and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and not dropout


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature; `query`/`key`/`value` are (batch, heads, tokens, head_dim)."""
    for same_as_query in ("cu_seq_lens_k", "max_length_k"):  # self-attention
        kwargs.pop(same_as_query, None)
    position_ids = kwargs.get("position_ids")
    if cu_seq_lens_q is None and attention_mask is None and position_ids is not None and query.shape[0] == 1:
        cu_seq_lens_q = row_boundaries(position_ids)
    if cu_seq_lens_q is None or query.shape[0] != 1 or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    dropout = dropout if module.training else 0.0
    if _kernel_applies(query, dropout):
        if max_length_q is None:
            max_length_q = int(cu_seq_lens_q.diff().max())
        q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # (tokens, heads, head_dim)
        cu = cu_seq_lens_q.to(device=q.device, dtype=torch.int32)
        out = varlen_attn(q, k, v, cu, cu, max_length_q, max_length_q, scale=scaling, **CAUSAL_FLAG)
        return out.unsqueeze(0), None
    bounds = cu_seq_lens_q.tolist()
    rows = [
        F.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
            dropout_p=dropout, is_causal=True, scale=scaling,
        )
        for start, end in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(rows, dim=2).transpose(1, 2), None


def varlen_mask(*, attention_mask: torch.Tensor | None = None, q_length: int, kv_length: int, **kwargs: Any):
    """No mask where the attention function sees everything it needs (no padding, no cache: causal, or per row from
    the row boundaries); otherwise SDPA's mask, so padded batches and generation stay exact."""
    if attention_mask is None and q_length == kv_length:
        return None
    return sdpa_mask(attention_mask=attention_mask, q_length=q_length, kv_length=kv_length, **kwargs)


AttentionInterface.register(VARLEN_ATTENTION, varlen_attention_forward)
AttentionMaskInterface.register(VARLEN_ATTENTION, varlen_mask)


def use_varlen_attention(model: PreTrainedModel) -> str:
    """Switch the language model of a vision-language `model` to per-row attention (the vision tower keeps its own);
    a language model already on a flash-attention implementation keeps it. Returns the implementation in use."""
    text = model.config.get_text_config()
    if text._attn_implementation.startswith(FLASH_ATTENTION_PREFIX):
        return text._attn_implementation
    key = next((name for name in model.config.sub_configs if getattr(model.config, name) is text), None)
    model.set_attn_implementation({key: VARLEN_ATTENTION} if key else VARLEN_ATTENTION)
    return VARLEN_ATTENTION
