"""Model FLOPs and MFU: the arithmetic behind stage 03's `mfu` metric and the plan's GPU-hours.

MFU (PaLM, Chowdhery et al. 2022, appendix B): model FLOPs per token
  6 * N + 12 * L * H * Q * T
with N the parameters used in matrix multiplies (all but the input-embedding lookup; a
tied embedding counts once, as the LM head), L layers, H heads, Q head dim, T sequence
length; MFU = tokens/s * FLOPs per token / (devices * peak dense bf16 FLOP/s of the
device, PEAK_BF16_FLOPS). On CPU MFU is reported as null.
"""
from __future__ import annotations

from .assets import ModelShape

# Dense (no sparsity) bf16 tensor-core peak FLOP/s per device, from vendor data sheets.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,  # SXM
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
}


def peak_flops(device_name: str | None) -> float | None:
    if not device_name:
        return None
    for key, value in PEAK_BF16_FLOPS.items():  # first match wins: specific names first
        if key in device_name:
            return value
    return None


def matmul_params(shape: ModelShape, vocab_size: int, tied: bool = True) -> int:
    """Parameters used in matrix multiplies of a Mistral model (no embedding lookup, no norms)."""
    h, q = shape.hidden_size, shape.head_dim
    attn = h * shape.num_heads * q * 2 + h * shape.num_kv_heads * q * 2  # q,o + k,v
    mlp = 3 * h * shape.intermediate_size  # gate, up, down
    return shape.num_layers * (attn + mlp) + vocab_size * h  # + LM head (tied or not)


def flops_per_token(shape: ModelShape, vocab_size: int, seq_len: int) -> float:
    """PaLM appendix B: 6N + 12 L H Q T (forward + backward)."""
    n = matmul_params(shape, vocab_size)
    return 6 * n + 12 * shape.num_layers * shape.num_heads * shape.head_dim * seq_len


def mfu(tokens_per_s: float, shape: ModelShape, vocab_size: int, seq_len: int,
        device_name: str | None, n_devices: int = 1) -> float | None:
    peak = peak_flops(device_name)
    if peak is None or tokens_per_s <= 0:
        return None
    return tokens_per_s * flops_per_token(shape, vocab_size, seq_len) / (peak * n_devices)
