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

    def run(k):
        def f(p):
            ce, correct = token_losses(
                graphdef, p, ids, mask, labels, deterministic=True, rng=None, max_masked=k
            )
            return ce, correct

        (ce, correct), grads = jax.value_and_grad(f, has_aux=True)(params)
        return float(ce), int(correct), jax.tree.leaves(grads)

    ce0, c0, g0 = run(None)
    for k in (16, 8):  # 16: gathered; 8 < 9 masked in row 0: the full-head fallback
        ce, c, g = run(k)
        assert ce == pytest.approx(ce0, rel=1e-6) and c == c0
        for a, b in zip(g, g0, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


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
