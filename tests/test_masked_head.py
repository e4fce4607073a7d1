"""The MLM head at the masked positions only, in both trainers: the same loss, correct count and gradients
as the head at every position (JAX: gather, with the full-head fallback above `masked_bound`; torch: the
scoped hook of `head_at_rows` in `WWMTrainer.compute_loss`)."""

from __future__ import annotations

import numpy as np
import pytest


def test_masked_bound():
    from wwm.masking import MaskingConfig
    from wwm_jax.train_step import masked_bound

    assert masked_bound(MaskingConfig(mask_prob=0.15), 512) == 80  # round(76.8) = 77 -> 80
    assert masked_bound(MaskingConfig(mask_prob=0.15), 128) == 24  # 19 -> 24
    assert masked_bound(MaskingConfig(mask_prob=0.15, max_predictions=20), 512) == 24
    assert masked_bound(MaskingConfig(mask_prob=0.15, budget="bernoulli"), 512) == 128
    assert masked_bound(MaskingConfig(mask_prob=0.9), 16) == 16  # never above L


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_jax_masked_head_equals_full_head(model_type):
    """Loss, correct count and gradients with the head at masked positions (and its overflow fallback)
    equal the head at every position."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from wwm_jax.modeling import EncoderConfig, build_model
    from wwm_jax.train_step import token_losses

    cfg = EncoderConfig(
        model_type=model_type, vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=80, pad_token_id=1,
    )  # fmt: skip
    graphdef, params = nnx.split(build_model(cfg, seed=0))
    rng = np.random.default_rng(0)
    M, L = 4, 48
    ids = jnp.asarray(rng.integers(5, 300, (M, L)), jnp.int32)
    mask = jnp.ones((M, L), jnp.int32).at[1, 40:].set(0)
    labels = np.full((M, L), -100)
    for row, n in enumerate([9, 3, 0, 7]):
        pos = rng.choice(np.arange(1, 40), size=n, replace=False)
        labels[row, pos] = rng.integers(5, 300, n)
    labels = jnp.asarray(labels, jnp.int32)

    def run(k, chunk=256):
        def f(p):
            ce, correct = token_losses(
                graphdef, p, ids, mask, labels, deterministic=True, rng=None, max_masked=k, head_chunk=chunk
            )
            return ce, correct

        with jax.default_matmul_precision("highest"):  # jitted: one compile instead of op-by-op dispatch
            (ce, correct), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(params)
        return float(ce), int(correct), jax.tree.leaves(grads)

    ce0, c0, g0 = run(None)  # L = 48 <= 256: the plain head at every position, one (M, L, V) array
    for k in (16, 8):  # 16: gathered; 8 < 9 masked in row 0: the full-head fallback
        ce, c, g = run(k)
        assert ce == pytest.approx(ce0, rel=1e-6) and c == c0
        for a, b in zip(g, g0, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The head in chunks of <= 8 slots per row (`head_sums`): k = 12 gathers 12 slots into 2 chunks of 8 (4
    # padded slots); k = 8 overflows and runs the head at all 48 positions in 6 chunks. Same sums: loss to
    # 1e-6 relative, gradients to 1e-5 relative + 1e-6 absolute (entries up to ~2.5; fp32, highest
    # precision; only the order of the float sums differs: ~7e-7 measured).
    if model_type != "bert":
        return  # the chunking is the head's, the same for every family: BERT's run covers it
    for k in (12, 8):
        ce, c, g = run(k, chunk=8)
        assert ce == pytest.approx(ce0, rel=1e-6) and c == c0
        for a, b in zip(g, g0, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Negative control: a chunked loss that lost one masked token's term (a dropped ragged tail) fails it.
    row3 = int(np.flatnonzero(np.asarray(labels[3]) != -100)[-1])
    lost = labels.at[3, row3].set(-100)
    ce_lost, _ = token_losses(graphdef, params, ids, mask, lost, deterministic=True, rng=None, max_masked=12,
                              head_chunk=8)  # fmt: skip
    assert float(ce_lost) != pytest.approx(ce0, rel=1e-6)


def test_jax_head_temporaries_do_not_grow_with_length_times_vocab():
    """The compiled temporaries of the loss's gradient (XLA's buffer assignment: deterministic, not a
    timing) stay under half of one (L, V) float32 array with the head in chunks, both branches of the
    masked-positions `cond` included (before: the full-head branch's ~3 such arrays); the plain head
    (negative control) holds more than 1.5 (its logits, log-softmax and their gradient at once)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from wwm_jax.modeling import EncoderConfig, build_model
    from wwm_jax.train_step import head_sums, token_losses

    L, V = 256, 8192  # the head dominates: V >> the encoder's per-token width (H = 16, scores (1, 1, L, L))
    cfg = EncoderConfig(
        model_type="bert", vocab_size=V, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
        intermediate_size=32, max_position_embeddings=L, pad_token_id=0,
    )  # fmt: skip
    graphdef, params = nnx.split(nnx.eval_shape(lambda: build_model(cfg)))  # shapes only: nothing to run
    ids = jax.ShapeDtypeStruct((1, L), jnp.int32)

    def temp_bytes(loss, *args):
        return jax.jit(jax.grad(loss)).lower(params, *args).compile().memory_analysis().temp_size_in_bytes

    def loss(p, ids, labels):  # gathered: 32 slots in 2 chunks; the cond's full branch: 16 chunks
        ce, _ = token_losses(graphdef, p, ids, jnp.ones_like(ids), labels, deterministic=True, rng=None,
                             max_masked=L // 8, head_chunk=16)  # fmt: skip
        return ce

    def plain(p, hidden, labels):
        return head_sums(nnx.merge(graphdef, p), hidden, labels, labels > 0, None)[0]

    logits = L * V * 4  # one (1, L, V) float32 array: 8 MiB
    assert temp_bytes(loss, ids, ids) < 0.5 * logits  # ~2 MiB, the encoder included
    hidden = jax.ShapeDtypeStruct((1, L, 16), jnp.float32)
    assert temp_bytes(plain, hidden, ids) > 1.5 * logits  # ~16 MiB: the measure sees an unchunked head


def test_torch_masked_head_equals_full_head():
    """WWMTrainer.compute_loss (head at masked positions) equals the loss of the full logits."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from wwm_torch.trainer import WWMTrainer, masked_lm_sums

    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, attn_implementation="eager")
    )  # fmt: skip
    trainer = WWMTrainer.__new__(WWMTrainer)  # only compute_loss and the masked-positions head are exercised
    trainer.model, trainer.masked_head = model, True
    trainer.args = type("A", (), {"world_size": 1})()
    model.train(False)
    ids = torch.randint(5, 300, (3, 24))
    labels = torch.full((3, 24), -100)
    labels[0, [2, 5, 6]] = ids[0, [2, 5, 6]]
    labels[2, [1, 20]] = 7
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    loss = trainer.compute_loss(model, inputs)
    full = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert full.shape == (3, 24, 300)  # the masked-positions head is scoped to compute_loss
    ce, n, _ = masked_lm_sums(full, labels)
    assert float(loss.detach()) == pytest.approx(float(ce.detach() / n), rel=1e-6)
    loss.backward()
    g_masked = model.cls.predictions.transform.dense.weight.grad.clone()
    model.zero_grad()
    (ce / n).backward()
    torch.testing.assert_close(
        g_masked, model.cls.predictions.transform.dense.weight.grad, rtol=1e-4, atol=1e-7
    )
