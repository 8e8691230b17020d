"""Grouped-query SDPA for padded batches on CPU (the batched transformers synthesis backend).

transformers' "sdpa" attention expands grouped K/V heads (`repeat_kv`) whenever a padding mask
is present, which copies the whole KV cache at every decode step; in a left-padded batch that
copy is a quarter of the step time on CPU. torch's CPU SDPA kernel accepts a mask and grouped
heads together (`enable_gqa`), so this variant skips the copy and gives the same tokens.
It is registered through transformers' public AttentionInterface / AttentionMaskInterface (same
masks as "sdpa"). Not used on CUDA, where a mask plus `enable_gqa` falls back to the slow math
kernel and the stock "sdpa" is the faster choice.
"""
from __future__ import annotations

NAME = "sdpa_grouped"


def sdpa_grouped_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                         scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    import torch

    groups = getattr(module, "num_key_value_groups", 1)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    # sdpa_mask returns None when no padding needs masking: the causal flag then does the job
    causal = bool(query.shape[2] > 1 and attention_mask is None and causal)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=causal,
        enable_gqa=groups > 1)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register NAME with transformers (idempotent) and return it for `set_attn_implementation`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, sdpa_grouped_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_grouped(model, device: str) -> bool:
    """Switch a loaded model to NAME when it helps: CPU, grouped K/V heads, stock sdpa attention."""
    cfg = model.config
    kv = getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", 0)
    if device != "cpu" or kv == getattr(cfg, "num_attention_heads", kv) or cfg._attn_implementation != "sdpa":
        return False
    model.set_attn_implementation(register())
    return True
