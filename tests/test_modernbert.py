"""wwm_jax.modernbert without torch: the attention mask, packed positions, the masked-rows head, dropout.

Parity with transformers is in parity_tests/test_modernbert_model.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wwm_jax import convert
from wwm_jax.attention import AttentionMask
from wwm_jax.modernbert import (
    ModernBertConfig,
    alternating_layer_types,
    build_model,
    packed_position_ids,
)

CONFIG = ModernBertConfig(
    vocab_size=60,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=3,
    num_attention_heads=2,
    local_attention=4,
    pad_token_id=0,
    max_position_embeddings=32,
)


@pytest.fixture(scope="module")
def model():
    return build_model(CONFIG, seed=3)


def _keep(segments, window):
    return np.asarray(AttentionMask(jnp.asarray([segments]), True).keep(window))[0, 0]  # (L, L) bool


def test_attention_mask_keeps_documents_apart_and_windows_local_layers():
    segments = [1, 1, 1, 2, 2, 2, 2, 0]
    full = _keep(segments, None)
    assert full[0].tolist() == [True, True, True, False, False, False, False, False]
    assert full[4].tolist() == [False, False, False, True, True, True, True, False]
    # Padding is a segment of its own: padding queries see padding keys only, real queries never see them.
    assert full[7].tolist() == [False] * 7 + [True]
    local = _keep(segments, 1)
    assert local[4].tolist() == [False, False, False, True, True, True, False, False]
    assert local[3].tolist() == [False, False, False, True, True, False, False, False]
    # Every query keeps itself: no softmax row is empty, an all-padding row included.
    assert np.diagonal(local).all() and np.diagonal(_keep([0, 0, 0, 0], 1)).all()


def test_packed_position_ids_restart_per_document():
    segments = jnp.asarray([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    assert packed_position_ids(segments).tolist() == [[0, 1, 2, 0, 1, 0, 0, 1], list(range(8))]


def test_alternating_layer_types_match_transformers_rule():
    assert alternating_layer_types(5, 2) == ("full_attention", "sliding_attention") * 2 + ("full_attention",)
    assert ModernBertConfig(num_hidden_layers=4).layer_types == alternating_layer_types(4, 3)


@pytest.mark.parametrize("kernel", ["eager", pytest.param("flash", marks=pytest.mark.slow)])
def test_packed_row_equals_documents_run_alone(model, kernel):
    """Our own model: a packed row (documents longer than the window) gives each document the logits it
    gets in a row of its own (padded after it); an attention_mask marks padding on top of segment ids.
    With the eager and the flash kernel."""
    from wwm_jax.attention import set_kernel

    model = set_kernel(nnx.clone(model), kernel)
    rng = np.random.default_rng(0)
    lengths = (9, 5, 7)
    docs = [rng.integers(1, 60, size=n) for n in lengths]
    ids = np.concatenate([*docs, [0, 0, 0]])[None]  # (1, 24)
    segments = np.repeat([1, 2, 3, 0], [*lengths, 3])[None]
    alone_ids = np.zeros((3, 24), int)
    for row, doc in enumerate(docs):
        alone_ids[row, : len(doc)] = doc
    both = np.asarray(
        model(np.concatenate([ids, alone_ids]), segment_ids=np.concatenate([segments, alone_ids > 0]))
    )
    packed, alone = both[0], both[1:]
    for row, start in enumerate(np.cumsum([0, *lengths[:-1]])):
        assert np.abs(packed[start : start + lengths[row]] - alone[row, : lengths[row]]).max() <= 1e-5
    mask = np.concatenate([segments > 0, alone_ids > 0]).astype(np.int32)
    relabelled = np.where(mask, np.concatenate([segments, alone_ids > 0]), 7)  # padding as "document 7"
    masked = np.asarray(model(np.concatenate([ids, alone_ids]), mask, segment_ids=relabelled))
    assert np.array_equal(masked[mask == 1], both[mask == 1])


def test_head_on_gathered_rows_equals_full_logits(model):
    """The trainers run the head at masked positions only: mlm_logits of gathered rows."""
    ids = jnp.asarray(np.random.default_rng(1).integers(1, 60, size=(2, 12)))
    hidden = model.encode(ids)
    rows = jnp.take_along_axis(hidden, jnp.asarray([[1, 5], [0, 11]])[..., None], axis=1)  # (2, 2, H)
    full = model(ids)
    assert np.allclose(
        model.mlm_logits(rows), jnp.take_along_axis(full, jnp.asarray([[1, 5], [0, 11]])[..., None], 1)
    )


def test_bf16_compute_keeps_float32_params_and_logits():
    bf16 = build_model(CONFIG, dtype=jnp.bfloat16)
    ids = jnp.asarray([[5, 6, 7, 8, 9, 0, 0]])
    logits = bf16(ids, (ids != 0).astype(jnp.int32))
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())
    assert {v.dtype for v in convert.flat_params(bf16).values()} == {np.dtype(np.float32)}


def test_dropout_needs_rngs_and_is_reproducible_per_key():
    import dataclasses

    m = build_model(
        dataclasses.replace(CONFIG, embedding_dropout=0.1, attention_dropout=0.1, mlp_dropout=0.1)
    )
    ids = jnp.full((2, 6), 7)
    with pytest.raises(ValueError, match="rngs"):
        m(ids, deterministic=False)
    a = m(ids, deterministic=False, rngs=jax.random.key(0))
    assert np.array_equal(a, m(ids, deterministic=False, rngs=jax.random.key(0)))
    assert not np.allclose(a, m(ids, deterministic=False, rngs=jax.random.key(1)))
    assert not np.allclose(a, m(ids))


def test_init_follows_transformers_truncated_normals(model):
    """Truncated at +-2 std (initializer_cutoff_factor); "out" projections use std / sqrt(2 * layers)."""
    params = convert.flat_params(model)
    std = CONFIG.initializer_range
    assert np.abs(params["model/embeddings/tok_embeddings/embedding"]).max() <= 2 * std
    out_std = std / np.sqrt(2 * CONFIG.num_hidden_layers)
    wo = params["model/layers/1/attn/Wo/kernel"]
    assert np.abs(wo).max() <= 2 * out_std and wo.std() > 0.5 * out_std
    assert np.array_equal(params["decoder/bias"], np.zeros(CONFIG.vocab_size, np.float32))
