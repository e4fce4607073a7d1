"""`train.attn_implementation`: one name, one meaning, in both trainers (docs/models.md "Attention kernels").

A name means one kernel. Where a framework has no such kernel, the name is refused there with one line that
names the alternative; names from before this table keep working with one deprecation line.

| name | JAX (`wwm_jax.attention.KERNELS`) | torch (transformers' `attn_implementation`) |
|---|---|---|
| `auto` | eager | sdpa |
| `eager` | eager: einsum scores, the parity reference | eager |
| `flash` | flash: blockwise online softmax, recomputing custom VJP, O(L) memory, any platform | `wwm_blockwise` (wwm_torch/attention.py): query chunks x their key span, recomputing backward, O(L) memory, CPU and GPU |
| `sdpa` | (old name of xla: deprecated) | sdpa: `torch.nn.functional.scaled_dot_product_attention` |
| `xla` | `jax.nn.dot_product_attention(implementation="xla")` | refused (use sdpa) |
| `cudnn` | `jax.nn.dot_product_attention(implementation="cudnn")`, NVIDIA GPU | refused (use sdpa or flash) |
| `splash` | Pallas TPU splash attention (TPU; CPU tests in interpret mode) | refused (use flash) |
| `flash_attention_2` | (old name of cudnn: deprecated) | flash-attn's CUDA kernels (the package and a GPU) |
| `blockwise` | (old name of flash: deprecated) | (old name of flash: deprecated) |
"""

from __future__ import annotations

import sys

from wwm.errors import WWMError

FRAMEWORKS = ("jax", "torch")

# name -> {framework: that framework's kernel}; a framework missing from the dict refuses the name.
IMPLEMENTATIONS: dict[str, dict[str, str]] = {
    "auto": {"jax": "eager", "torch": "sdpa"},
    "eager": {"jax": "eager", "torch": "eager"},
    "flash": {"jax": "flash", "torch": "wwm_blockwise"},
    "sdpa": {"torch": "sdpa"},
    "xla": {"jax": "xla"},
    "cudnn": {"jax": "cudnn"},
    "splash": {"jax": "splash"},
    "flash_attention_2": {"torch": "flash_attention_2"},
}

# (old name, framework) -> the name that now means what the old name meant there.
RENAMED: dict[tuple[str, str], str] = {
    ("blockwise", "jax"): "flash",
    ("blockwise", "torch"): "flash",
    ("sdpa", "jax"): "xla",
    ("flash_attention_2", "jax"): "cudnn",
}

NAMES = (*IMPLEMENTATIONS, "blockwise")  # every accepted value (TrainConfig's Literal lists the same)

_ALTERNATIVE = {"jax": "eager, flash or xla", "torch": "eager, sdpa or flash"}
_warned: set[tuple[str, str]] = set()


def implementation(name: str, framework: str) -> str:
    """The kernel `train.attn_implementation: name` selects in `framework` ("jax": a key of
    `wwm_jax.attention.KERNELS`; "torch": a transformers attn_implementation). Old names print one
    deprecation line (once per process); a name the framework has no kernel for raises WWMError."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}; got {framework!r}")
    if (name, framework) in RENAMED:
        new = RENAMED[(name, framework)]
        if (name, framework) not in _warned:
            _warned.add((name, framework))
            print(
                f"wwm: warning: train.attn_implementation {name} is deprecated in {framework}; it now runs "
                f"{new} (set train.attn_implementation: {new})",
                file=sys.stderr,
            )
        name = new
    if name not in IMPLEMENTATIONS:
        raise WWMError(f"unknown train.attn_implementation {name!r}; use one of {', '.join(NAMES)}")
    kernels = IMPLEMENTATIONS[name]
    if framework not in kernels:
        other = next(iter(kernels))
        raise WWMError(
            f"train.attn_implementation {name} is a {other} kernel; the {framework} trainer has none by that "
            f"name; use {_ALTERNATIVE[framework]}"
        )
    return kernels[framework]
