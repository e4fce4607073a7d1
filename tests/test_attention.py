"""The attention module (wwm_jax/attention.py, wwm_torch/attention.py, wwm/attention.py) at kernel level.

Every kernel equals `eager` (fp32, highest matmul precision) in outputs and in the gradients of q, k, v,
with and without packed documents and local windows, at every position (padding included: the mask rule
gives every query a key). Tolerances: outputs 2e-6 max abs (measured ~7e-7), gradients 2e-6 of the
largest entry (measured ~5e-7). Negative controls: a window one wider, and the segments ignored, fail
the same comparison. Structure: flash never holds a (B, N, L, L) array, forward or backward, and its
local path computes only the blocks inside the window.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from wwm.attention import IMPLEMENTATIONS, NAMES, implementation
from wwm.errors import WWMError
from wwm_jax.attention import KERNELS, AttentionMask, attention, check_kernel, flash_attention

OUT_TOL = 2e-6
GRAD_TOL = 2e-6
B, L, N, D = 2, 200, 2, 16


@pytest.fixture(autouse=True)
def _highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def _segments(packed: bool) -> np.ndarray:
    """Row 0: three documents then padding (packed) or one document then padding; row 1: padded at 120."""
    seg = np.ones((B, L), np.int32)
    if packed:
        seg[0, 70:150], seg[0, 150:190] = 2, 3
    seg[0, 190:] = 0
    seg[1, 120:] = 0
    return seg


def _inputs(seed: int = 0, length: int = L, batch: int = B):
    rng = np.random.default_rng(seed)
    q, k, v, w = (jnp.asarray(rng.normal(size=(batch, length, N, D)).astype(np.float32)) for _ in range(4))
    return q, k, v, w


def _value_and_grads(fn, q, k, v, w):
    out, grads = jax.jit(
        lambda q, k, v: (fn(q, k, v), jax.grad(lambda *a: (fn(*a) * w).sum(), argnums=(0, 1, 2))(q, k, v))
    )(q, k, v)
    return np.asarray(out), [np.asarray(g) for g in grads]


def _errors(a, b):
    (out_a, grads_a), (out_b, grads_b) = a, b
    grad_err = max(
        float(np.abs(x - y).max() / np.abs(y).max()) for x, y in zip(grads_a, grads_b, strict=True)
    )
    return float(np.abs(out_a - out_b).max()), grad_err


def _run(kernel: str, mask: AttentionMask, window, inputs, **flash_blocks):
    q, k, v, w = inputs
    if flash_blocks:
        return _value_and_grads(
            lambda q, k, v: flash_attention(q, k, v, mask.segments, window=window, **flash_blocks), q, k, v, w
        )
    return _value_and_grads(
        lambda q, k, v: attention(q, k, v, mask, kernel=kernel, window=window), q, k, v, w
    )


CASES = [(False, None), (True, None), (True, 5), (False, 40)]


@pytest.mark.parametrize(("packed", "window"), CASES)
def test_kernels_equal_eager(packed, window):
    inputs = _inputs()
    mask = AttentionMask(jnp.asarray(_segments(packed)), packed)
    reference = _run("eager", mask, window, inputs)
    runs = {
        "flash": _run("flash", mask, window, inputs),
        # small blocks: several query chunks, key blocks and local blocks, and L not a multiple of them
        "flash (blocks 64/32/32)": _run(
            "flash", mask, window, inputs, chunk_q=64, block_k=32, block_local=32
        ),
    }
    if packed == (window is None):  # xla is jax.nn.dot_product_attention with the same boolean mask
        runs["xla"] = _run("xla", mask, window, inputs)
    for name, run in runs.items():
        out_err, grad_err = _errors(run, reference)
        assert out_err <= OUT_TOL and grad_err <= GRAD_TOL, (name, out_err, grad_err)


def test_negative_controls_fail_the_comparison():
    """A window one wider, or the documents ignored, are caught by the same comparison."""
    inputs = _inputs()
    mask = AttentionMask(jnp.asarray(_segments(True)), True)
    reference = _run("eager", mask, 5, inputs)
    wider = _run("flash", mask, 6, inputs)
    assert min(_errors(wider, reference)) > 100 * OUT_TOL
    unpacked = AttentionMask(jnp.asarray((_segments(True) > 0).astype(np.int32)), False)
    assert min(_errors(_run("flash", unpacked, 5, inputs), reference)) > 100 * OUT_TOL


def test_bert_key_padding_rule_with_a_fully_padded_row_equals_eager():
    """BERT/RoBERTa rows without segment ids (`key_padding`): transformers' rule, every query (padding ones
    too) attends the real keys, and a row without real keys averages all L values uniformly (the float32-min
    additive mask). flash (also with small blocks) and xla equal eager at every position, in outputs and
    q/k/v gradients. Negative control: the default rule (padding is a segment) differs at padding queries."""
    seg = _segments(False)
    seg[1] = 0  # row 1: fully padded
    mask = AttentionMask.build(jnp.asarray(seg), key_padding=True)
    keep = np.asarray(mask.keep())[:, 0]
    assert keep[0, 195].tolist() == (seg[0] != 0).tolist() and not keep[1].any()
    inputs = _inputs()
    reference = _run("eager", mask, None, inputs)
    q, k, v, w = inputs
    uniform = np.asarray(v[1]).mean(axis=0)  # (N, D): what the fully padded row's every query returns
    assert np.abs(reference[0][1] - uniform[None]).max() <= OUT_TOL
    runs = {
        "flash": _run("flash", mask, None, inputs),
        "flash blocks": _value_and_grads(
            lambda q, k, v: flash_attention(
                q, k, v, mask.segments, chunk_q=64, block_k=32, query_segments=mask.query_segments()
            ),
            q,
            k,
            v,
            w,
        ),
    }
    for name, run in runs.items():
        out_err, grad_err = _errors(run, reference)
        assert out_err <= OUT_TOL and grad_err <= GRAD_TOL, (name, out_err, grad_err)
    # xla: equal outputs everywhere; its gradients through a row without keys are 0 (jax.nn's masked
    # logits are constants there, transformers' additive mask passes them on), so compare the other row's.
    xla = _run("xla", mask, None, inputs)
    assert np.abs(xla[0] - reference[0]).max() <= OUT_TOL
    row0 = [(xla[0][:1], [g[:1] for g in xla[1]]), (reference[0][:1], [g[:1] for g in reference[1]])]
    assert _errors(*row0)[1] <= GRAD_TOL
    segment_rule = _run("eager", AttentionMask(jnp.asarray(seg), False), None, inputs)
    assert np.abs(segment_rule[0][0, :190] - reference[0][0, :190]).max() <= OUT_TOL  # real queries: same
    assert np.abs(segment_rule[0][0, 190:] - reference[0][0, 190:]).max() > 100 * OUT_TOL


def test_mask_rule():
    """seg[i] == seg[j] (padding is a segment of its own) and |i - j| <= w; every query keeps itself."""
    seg = jnp.asarray([[1, 1, 2, 2, 2, 0, 0]])
    keep = np.asarray(AttentionMask(seg, True).keep(window=1))[0, 0]
    assert keep[0].tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert keep[3].tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert keep[6].tolist() == [0, 0, 0, 0, 0, 1, 1]  # padding attends padding only
    assert np.diagonal(keep).all()
    built = AttentionMask.build(jnp.asarray([[1, 1, 1, 0]]), jnp.asarray([[1, 1, 2, 2]]))
    assert built.packed and np.asarray(built.segments).tolist() == [[1, 1, 2, 0]]
    assert np.asarray(AttentionMask.build(jnp.asarray([[1, 0]])).segments).tolist() == [[1, 0]]


def _largest_arrays(fn, *args) -> list[tuple[int, ...]]:
    """Shapes of every value in the jaxpr of fn (nested jaxprs included)."""
    shapes = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            shapes.extend(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return shapes


def test_flash_never_builds_scores_of_l_by_l():
    """No (B, N, L, L) array in flash's forward + backward (the largest: the global path's (B, N, 512, 512)
    score blocks); the local path's largest is (B, N, L / 64, 64, 64 + 2w): the blocks outside the window are
    never built."""
    length = 2048
    q, k, v, w = _inputs(length=length, batch=1)
    seg = jnp.ones((1, length), jnp.int32)

    def loss(window):
        return lambda q, k, v: (flash_attention(q, k, v, seg, window=window) * w).sum()

    for window in (None, 64):
        shapes = _largest_arrays(jax.grad(loss(window), argnums=(0, 1, 2)), q, k, v)
        assert max(int(np.prod(s)) for s in shapes) <= N * length * length // 8
    local = _largest_arrays(jax.grad(loss(64), argnums=(0, 1, 2)), q, k, v)
    assert max(int(np.prod(s)) for s in local) <= N * length * (64 + 2 * 64)
    # Negative control: eager's jaxpr holds the (B, N, L, L) scores.
    mask = AttentionMask(seg, False)
    eager = _largest_arrays(lambda q, k, v: attention(q, k, v, mask, kernel="eager"), q, k, v)
    assert (1, N, length, length) in eager


@pytest.mark.slow
def test_flash_memory_grows_linearly():
    """Compiled temporary memory of flash's gradient: x4 in L gives < x5 (eager: > x8, its L^2 scores)."""

    def temp_bytes(kernel, length, window):
        q, k, v, w = _inputs(length=length, batch=1)
        mask = AttentionMask(jnp.ones((1, length), jnp.int32), False)

        def loss(q, k, v):
            return (attention(q, k, v, mask, kernel=kernel, window=window) * w).sum()

        compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    for window in (None, 64):
        ratio = temp_bytes("flash", 2048, window) / temp_bytes("flash", 512, window)
        assert ratio < 5, (window, ratio)
    assert temp_bytes("eager", 1024, None) / temp_bytes("eager", 256, None) > 8


def test_refusals_are_one_line():
    with pytest.raises(WWMError, match="cuDNN flash attention needs an NVIDIA GPU"):
        check_kernel("cudnn")
    with pytest.raises(WWMError, match="splash attention is a Pallas TPU kernel"):
        check_kernel("splash")
    with pytest.raises(WWMError, match="has no attention dropout"):
        check_kernel("flash", attention_dropout=0.1)
    assert check_kernel("flash", attention_dropout=0.1, training=False).name == "flash"
    assert check_kernel("eager", attention_dropout=0.1).name == "eager"
    with pytest.raises(WWMError, match="unknown JAX attention kernel"):
        check_kernel("nope")


def test_one_name_one_meaning_in_both_frameworks(capsys):
    """Every JAX kernel the table names exists; names without a kernel in a framework are refused there;
    old names map to their new name with one deprecation line."""
    assert {m["jax"] for m in IMPLEMENTATIONS.values() if "jax" in m} <= set(KERNELS)
    assert implementation("flash", "jax") == "flash" and implementation("flash", "torch") == "wwm_blockwise"
    assert implementation("eager", "torch") == "eager" and implementation("sdpa", "torch") == "sdpa"
    with pytest.raises(WWMError, match="xla is a jax kernel; the torch trainer has none"):
        implementation("xla", "torch")
    with pytest.raises(WWMError, match="splash is a jax kernel"):
        implementation("splash", "torch")
    assert implementation("blockwise", "jax") == "flash"
    assert implementation("sdpa", "jax") == "xla"
    assert implementation("flash_attention_2", "jax") == "cudnn"
    assert implementation("blockwise", "torch") == "wwm_blockwise"
    err = capsys.readouterr().err
    assert "blockwise is deprecated in jax; it now runs flash" in err
    assert "sdpa is deprecated in jax; it now runs xla" in err
    implementation("blockwise", "jax")
    assert capsys.readouterr().err == ""  # once per process
    import typing

    from wwm.config.sections import TrainConfig

    assert set(typing.get_args(typing.get_type_hints(TrainConfig)["attn_implementation"])) == set(NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("window", [None, 5])
def test_splash_equals_eager_in_tpu_interpret_mode(window):
    """Pallas' TPU splash attention, run on this CPU in TPU interpret mode (slow: ~10 s a case)."""
    from jax.experimental.pallas import tpu as pltpu

    length = 200  # padded to 256 inside: two 128-blocks, segments across the block edge
    inputs = _inputs(length=length, batch=1)
    seg = _segments(True)[:1, :length]
    mask = AttentionMask(jnp.asarray(seg), True)
    reference = _run("eager", mask, window, inputs)
    with pltpu.force_tpu_interpret_mode():
        assert check_kernel("splash").name == "splash"
        run = _run("splash", mask, window, inputs)
    out_err, grad_err = _errors(run, reference)
    assert out_err <= OUT_TOL and grad_err <= GRAD_TOL, (out_err, grad_err)


# ---------------------------------------------------------------------------------------------- torch


def _torch_reference(q, k, v, seg, window):
    import torch

    keep = seg[:, :, None] == seg[:, None, :]
    if window is not None:
        i = torch.arange(seg.shape[1])
        keep = keep & ((i[:, None] - i[None, :]).abs() <= window)
    s = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    s = s + torch.where(keep[:, None], 0.0, torch.finfo(torch.float32).min)
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize(("packed", "window"), CASES)
def test_torch_flash_equals_eager(packed, window):
    import torch

    from wwm_torch.attention import flash_attention as torch_flash

    seg = torch.as_tensor(_segments(packed), dtype=torch.long)
    q, k, v, w = (
        torch.as_tensor(np.asarray(x)).transpose(1, 2).contiguous() for x in _inputs()
    )  # (B, N, L, D)
    for chunk in (64, 256):
        leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
        out = torch_flash(*leaves, seg, window=window, chunk=chunk)
        grads = torch.autograd.grad((out * w).sum(), leaves)
        ref_leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
        ref = _torch_reference(*ref_leaves, seg, window)
        ref_grads = torch.autograd.grad((ref * w).sum(), ref_leaves)
        as_np = lambda t: t.detach().numpy()  # noqa: E731
        out_err, grad_err = _errors(
            (as_np(out), [as_np(g) for g in grads]), (as_np(ref), [as_np(g) for g in ref_grads])
        )
        assert out_err <= OUT_TOL and grad_err <= GRAD_TOL, (chunk, out_err, grad_err)
    # Negative control: a window one wider fails.
    if window is not None:
        wider = torch_flash(q, k, v, seg, window=window + 1)
        assert float((wider - _torch_reference(q, k, v, seg, window)).abs().max()) > 100 * OUT_TOL


def test_torch_flash_equals_jax_flash():
    """The same name, the same function in both frameworks."""
    import torch

    from wwm_torch.attention import flash_attention as torch_flash

    q, k, v, _ = _inputs()
    seg = _segments(True)
    for window in (None, 5):
        ours = np.asarray(flash_attention(q, k, v, jnp.asarray(seg), window=window))
        theirs = torch_flash(
            *(torch.as_tensor(np.asarray(x)).transpose(1, 2) for x in (q, k, v)),
            torch.as_tensor(seg, dtype=torch.long),
            window=window,
        )
        assert np.abs(theirs.transpose(1, 2).numpy() - ours).max() <= OUT_TOL
