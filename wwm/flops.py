"""Model FLOPs and chip peaks for MFU: one home for both trainers and the benchmarks (framework-free).

MFU (model FLOPs utilisation) = model FLOPs per second / (peak FLOP/s per device x devices), with
  FLOPs per step = 6 * N_params * T + 12 * H * T * sum over layers of K_l     (T = tokens in the global batch)
i.e. forward + backward of every parameter's matmul (6 N per token; the tied decoder matmul is counted
through the word embeddings) plus the attention score and value matmuls, QK^T and PV, 2 * 2 * K_l * H per
token per layer forward, times 3 for forward + backward, where K_l is the number of keys a query of layer l
sees: L on a global layer (bidirectional attention computes the full L x L scores, so nothing is halved),
min(L, 2w + 1) on a local layer with a window of +-w (ModernBERT's sliding-window layers). Padding positions
are computed, so T counts them too. Peak FLOP/s are dense bf16 figures; a float32 run on a GPU therefore
shows a lower MFU than its own peak would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def attention_windows(model_config: Any) -> tuple[int | None, ...] | None:
    """Per layer, the half-window +-w of a local layer or None for a global one, read from a model config
    that has `layer_types` and `sliding_window` (transformers' ModernBertConfig, wwm_jax's ModernBertConfig:
    both `local_attention // 2`); None for models whose every layer is global (BERT, RoBERTa)."""
    layer_types = getattr(model_config, "layer_types", None)
    if not layer_types:
        return None
    w = getattr(model_config, "sliding_window", None)
    return tuple(w if t == "sliding_attention" else None for t in layer_types)


def flops_per_step(
    n_params: int,
    layers: int,
    seq_len: int,
    hidden: int,
    tokens: int,
    *,
    windows: Sequence[int | None] | None = None,
) -> float:
    """Model FLOPs of one optimizer step (forward + backward) over `tokens` tokens (module docstring).
    `windows`: per layer, +-w of a local layer or None (global); None: all `layers` global."""
    if windows is None:
        keys = float(layers * seq_len)
    else:
        keys = float(sum(seq_len if w is None else min(seq_len, 2 * w + 1) for w in windows))
    return 6.0 * n_params * tokens + 12.0 * keys * hidden * tokens


def flops_per_token(
    n_params: int, layers: int, seq_len: int, hidden: int, *, windows: Sequence[int | None] | None = None
) -> float:
    return flops_per_step(n_params, layers, seq_len, hidden, 1, windows=windows)


if __name__ == "__main__":  # `python -m wwm.flops DEVICE_NAME`: the peak, for shell scripts
    import sys

    print(peak_flops(" ".join(sys.argv[1:])) or "")
