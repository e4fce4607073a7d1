"""Model FLOPs and chip peaks for MFU: one home for both trainers and the benchmarks (framework-free).

MFU (model FLOPs utilisation) = model FLOPs per second / (peak FLOP/s per device x devices), with
  FLOPs per step = 6 * N_params * T + 12 * layers * L * H * T      (T = tokens in the global batch)
i.e. forward + backward of every parameter's matmul (6 N per token; the tied decoder matmul is counted
through the word embeddings) plus the attention score and value matmuls, QK^T and PV, 2 * 2 * L * H per
token per layer forward, times 3 for forward + backward. Bidirectional attention computes the full L x L
scores, so nothing is halved. Padding positions are computed, so T counts them too. Peak FLOP/s are dense
bf16 figures; a float32 run on a GPU therefore shows a lower MFU than its own peak would.
"""

from __future__ import annotations

# Dense bf16 peak FLOP/s per device, by a lowercase substring of the device name (jax's device_kind or
# torch.cuda.get_device_name()). H100 means the SXM part.
PEAK_BF16_FLOPS = (
    ("h200", 989e12),
    ("h100", 989e12),
    ("a100", 312e12),
    ("v6 lite", 918e12),  # TPU v6e (Trillium)
    ("v6e", 918e12),
    ("v5p", 459e12),
    ("v5 lite", 197e12),  # TPU v5e
    ("v5e", 197e12),
    ("v4", 275e12),
)


def peak_flops(device_name: str | None, configured: float | None = None) -> float | None:
    """The configured value, else the table's entry for this device, else None (CPUs: no MFU)."""
    if configured:
        return float(configured)
    name = (device_name or "").lower()
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)


def flops_per_step(n_params: int, layers: int, seq_len: int, hidden: int, tokens: int) -> float:
    """Model FLOPs of one optimizer step (forward + backward) over `tokens` tokens (module docstring)."""
    return 6.0 * n_params * tokens + 12.0 * layers * seq_len * hidden * tokens


def flops_per_token(n_params: int, layers: int, seq_len: int, hidden: int) -> float:
    return flops_per_step(n_params, layers, seq_len, hidden, 1)


if __name__ == "__main__":  # `python -m wwm.flops DEVICE_NAME`: the peak, for shell scripts
    import sys

    print(peak_flops(" ".join(sys.argv[1:])) or "")
