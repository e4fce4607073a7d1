"""Our Flax ModernBERT (wwm_jax.modernbert) against transformers' ModernBertForMaskedLM, same weights.

Tolerances (float32, "highest" matmul precision and TF32 off, see conftest.py):
  logits max abs diff <= 1e-5 (eager: every position; sdpa: real tokens, see below); MLM loss relative
  <= 1e-6; every gradient ||g_ours - g_torch|| / ||g_torch|| <= 1e-4; HF -> Flax -> HF bit-identical.

The tiny configs exercise what distinguishes ModernBERT: sequences of 40 > the local window (local_attention
8, so a local-layer token sees +-4 neighbours), global_attn_every_n_layers 2 and 3, padding, and packed
documents (segment ids + per-document positions; the reference runs each document alone). At padding
positions transformers' sdpa returns zeros for a query whose window holds no real key while eager (and we)
average all values uniformly; those outputs are never used, so sdpa is compared at real tokens only.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from wwm_jax import convert
from wwm_jax.attention import AttentionMask
from wwm_jax.modernbert import ModernBertConfig, build_model

IGNORE = -100
PAD, CLS, SEP = 3, 1, 2
L = 40
# Two variants: ModernBERT-base's switches (no biases, exact GELU, global every 3rd layer) and one with
# every bias, other activations and global every 2nd layer.
VARIANTS = {
    "base": dict(num_hidden_layers=4, global_attn_every_n_layers=3),
    "biased": dict(
        num_hidden_layers=3,
        global_attn_every_n_layers=2,
        norm_bias=True,
        attention_bias=True,
        mlp_bias=True,
        classifier_bias=True,
        hidden_activation="gelu_pytorch_tanh",
        classifier_activation="silu",
    ),
}


def _torch_config(variant: str, attn: str) -> transformers.ModernBertConfig:
    return transformers.ModernBertConfig(
        vocab_size=101,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=40,
        max_position_embeddings=64,
        local_attention=8,
        global_rope_theta=160_000.0,
        local_rope_theta=10_000.0,
        pad_token_id=PAD,
        bos_token_id=CLS,
        cls_token_id=CLS,
        eos_token_id=SEP,
        sep_token_id=SEP,
        attn_implementation=attn,
        **VARIANTS[variant],
    )


def _random_torch_model(variant: str, attn: str, seed: int = 0) -> torch.nn.Module:
    """Every parameter perturbed (by 5x the init std), so unit norm scales and zero biases hide nothing."""
    torch.manual_seed(seed)
    model = transformers.ModernBertForMaskedLM(_torch_config(variant, attn))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def _padded_batch(seed: int = 0):
    """(4, 40) ids: a full row, rows padded from 30 and from 10, an all-padding row; labels on ~1/3."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, 101, size=(4, L))
    ids[1, 30:] = PAD
    ids[2, 10:] = PAD
    ids[3, :] = PAD
    mask = (ids != PAD).astype(np.int64)
    ids[0, 5] = PAD  # a pad id at an attended position: its row gets no lookup gradient, as in torch
    labels = np.where((rng.random(ids.shape) < 0.35) & (mask == 1), ids, IGNORE)
    return ids, mask, labels


# Packed rows: documents (lengths) back to back, then padding; 25 and 20 are longer than the window.
PACKED = [[13, 20, 7], [25, 9]]


def _packed_batch(seed: int = 1):
    """(2, 40) ids, (2, 40) segment ids (0 = padding, 1..k = documents), labels, and the documents."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(PACKED), L), PAD)
    segments = np.zeros((len(PACKED), L), np.int32)
    docs = []
    for row, lengths in enumerate(PACKED):
        start = 0
        for number, length in enumerate(lengths, 1):
            doc = np.concatenate([[CLS], rng.integers(4, 101, size=length - 2), [SEP]])
            ids[row, start : start + length] = doc
            segments[row, start : start + length] = number
            docs.append((row, start, doc))
            start += length
    labels = np.where((rng.random(ids.shape) < 0.35) & (segments > 0), ids, IGNORE)
    return ids, segments, labels, docs


@pytest.fixture(scope="module", params=[(v, a) for v in VARIANTS for a in ("eager", "sdpa")], ids=str)
def tiny(request, tmp_path_factory):
    """(variant, attn, torch model, our model converted from its save_pretrained dir, hf dir)."""
    variant, attn = request.param
    torch_model = _random_torch_model(variant, attn).eval()
    hf_dir = tmp_path_factory.mktemp(f"hf_modernbert_{variant}_{attn}")
    torch_model.save_pretrained(hf_dir)
    return variant, attn, torch_model, convert.load_hf(hf_dir), hf_dir


def _torch_logits(torch_model, ids, mask=None) -> np.ndarray:
    with torch.no_grad():
        out = torch_model(
            input_ids=torch.tensor(ids)[None] if ids.ndim == 1 else torch.tensor(ids),
            attention_mask=None if mask is None else torch.tensor(mask),
        )
    return out.logits.numpy()


def _ce_sum(logits: jax.Array, labels: jax.Array) -> jax.Array:
    valid = labels != IGNORE
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid, nll, 0.0))


def _relative_grad_errors(model, grads, torch_model) -> dict[str, float]:
    ours = {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(grads)}
    table = convert.name_table(model.config)
    assert len(ours) == len(table)
    worst = {}
    for entry in table:
        ref = torch_model.get_parameter(entry.hf_key).grad.numpy()
        ref = ref.T if entry.transpose else ref
        assert np.linalg.norm(ref) > 0, entry.hf_key
        worst[entry.hf_key] = float(np.linalg.norm(ours[entry.flax_path] - ref) / np.linalg.norm(ref))
    return worst


# --- logits ---------------------------------------------------------------------------------------------


def test_modernbert_logits_match_transformers_max_abs_1e5(tiny):
    """Padded batch, L = 40 > the window: eager and sdpa at the real tokens (padding positions follow our
    mask rule, wwm_jax/attention.py: a padding query attends padding, transformers' the real keys; their
    outputs never reach a real token). The all-padding row is finite."""
    _, _, torch_model, model, _ = tiny
    ids, mask, _ = _padded_batch()
    ref = _torch_logits(torch_model, ids, mask)
    out = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert np.abs(ref).max() > 0.5  # not a comparison of near-zero tensors
    where = mask == 1
    assert bool(np.isfinite(out).all())
    assert float(np.abs(out - ref)[where].max()) <= 1e-5


def test_modernbert_packed_documents_match_each_document_alone(tiny):
    """Packed rows (segment ids, positions restarting per document, padding after the last document)
    give each token the logits transformers gives it when its document runs alone, unpadded."""
    _, _, torch_model, model, _ = tiny
    ids, segments, _, docs = _packed_batch()
    out = np.asarray(model(jnp.asarray(ids), segment_ids=jnp.asarray(segments)))
    worst = 0.0
    for row, start, doc in docs:
        ref = _torch_logits(torch_model, doc)[0]  # (len, V), positions 0..len-1
        worst = max(worst, float(np.abs(out[row, start : start + len(doc)] - ref).max()))
    assert worst <= 1e-5
    # The default positions restart with each document (and with the padding run after the last one).
    positions = [np.concatenate([np.arange(n) for n in [*row, L - sum(row)]]) for row in PACKED]
    explicit = model(jnp.asarray(ids), segment_ids=jnp.asarray(segments), position_ids=np.stack(positions))
    assert np.array_equal(np.asarray(explicit), out)


def test_modernbert_mlm_loss_matches_transformers_rel_1e6(tiny):
    _, _, torch_model, model, _ = tiny
    ids, mask, labels = _padded_batch()
    with torch.no_grad():
        ref = float(
            torch_model(
                input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels)
            ).loss
        )
    logits = model(jnp.asarray(ids), jnp.asarray(mask))
    ours = float(_ce_sum(logits, jnp.asarray(labels)) / np.sum(labels != IGNORE))
    assert abs(ours - ref) / abs(ref) <= 1e-6


# --- gradients ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_modernbert_gradients_match_transformers_rel_1e4(variant):
    """Padded batch, train mode (dropout 0): every parameter's relative gradient error <= 1e-4."""
    torch_model = _random_torch_model(variant, "eager").train()
    model = build_model(_our_config(torch_model))
    convert.set_flat_params(model, convert.hf_to_flax_params(_state(torch_model), model.config)[0])
    ids, mask, labels = _padded_batch()
    torch_model(
        input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels)
    ).loss.backward()

    def loss_fn(m):
        logits = m(jnp.asarray(ids), jnp.asarray(mask), deterministic=False)
        return _ce_sum(logits, jnp.asarray(labels)) / np.sum(labels != IGNORE)

    worst = _relative_grad_errors(model, nnx.grad(loss_fn)(model), torch_model)
    assert max(worst.values()) <= 1e-4, sorted(worst.items(), key=lambda kv: -kv[1])[:3]


def test_modernbert_packed_gradients_match_documents_alone_rel_1e4():
    """The packed loss (CE summed over every document's labels) has the gradients of the same sum over
    the documents run alone through transformers."""
    torch_model = _random_torch_model("base", "eager").train()
    model = build_model(_our_config(torch_model))
    convert.set_flat_params(model, convert.hf_to_flax_params(_state(torch_model), model.config)[0])
    ids, segments, labels, docs = _packed_batch()
    for row, start, doc in docs:
        doc_labels = torch.tensor(labels[row, start : start + len(doc)])[None]
        logits = torch_model(input_ids=torch.tensor(doc)[None]).logits
        torch.nn.functional.cross_entropy(
            logits.view(-1, logits.shape[-1]), doc_labels.view(-1), ignore_index=IGNORE, reduction="sum"
        ).backward()

    def loss_fn(m):
        logits = m(jnp.asarray(ids), segment_ids=jnp.asarray(segments), deterministic=False)
        return _ce_sum(logits, jnp.asarray(labels))

    worst = _relative_grad_errors(model, nnx.grad(loss_fn)(model), torch_model)
    assert max(worst.values()) <= 1e-4, sorted(worst.items(), key=lambda kv: -kv[1])[:3]


def _state(torch_model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}


def _our_config(torch_model) -> ModernBertConfig:
    return ModernBertConfig.from_hf_dict(torch_model.config.to_dict())


# --- negative controls: the comparisons above can fail -------------------------------------------------


def _with_config(model, **changes):
    """Our model with the same parameters under a changed config."""
    other = build_model(dataclasses.replace(model.config, **changes))
    nnx.update(other, nnx.state(model, nnx.Param))
    return other


def test_modernbert_negative_controls_fail_the_comparison(tiny):
    """Swapped global/local rope theta, a window one token wider, every layer global, or segment ids
    ignored in a packed row: each moves logits far beyond the 1e-5 bound."""
    _, _, torch_model, model, _ = tiny
    ids, mask, _ = _padded_batch()
    where = mask == 1
    ref = _torch_logits(torch_model, ids, mask)
    cfg = model.config
    wrong = {
        "swapped rope theta": _with_config(
            model, global_rope_theta=cfg.local_rope_theta, local_rope_theta=cfg.global_rope_theta
        ),
        "window + 1": _with_config(model, local_attention=cfg.local_attention + 2),
        "no local layers": _with_config(model, layer_types=("full_attention",) * cfg.num_hidden_layers),
    }
    for name, other in wrong.items():
        err = float(np.abs(np.asarray(other(jnp.asarray(ids), jnp.asarray(mask))) - ref)[where].max())
        assert err > 1e-3, name

    ids, segments, _, docs = _packed_batch()
    one_document = np.asarray(model(jnp.asarray(ids), jnp.asarray((segments > 0).astype(np.int32))))
    row, start, doc = docs[1]  # the second document of row 0
    err = float(
        np.abs(one_document[row, start : start + len(doc)] - _torch_logits(torch_model, doc)[0]).max()
    )
    assert err > 1e-3


def test_modernbert_window_is_inclusive_half_of_local_attention():
    """local_attention 8: a local-layer query at i sees i-4 .. i+4 (transformers: |i - j| <= 8 // 2)."""
    keep = np.asarray(AttentionMask(jnp.ones((1, 12), jnp.int32)).keep(4))[0, 0]
    assert keep[6].tolist() == [False, False, True, True, True, True, True, True, True, True, True, False]


# --- conversion and config ------------------------------------------------------------------------------


def test_modernbert_round_trip_hf_flax_hf_bit_identical(tiny, tmp_path):
    """HF -> Flax dir -> HF: same keys, dtypes and bits; transformers loads it with no missing/unexpected
    keys and its decoder is tied to the reloaded embeddings."""
    _, attn, torch_model, model, hf_dir = tiny
    convert.save_flax(model, tmp_path / "flax")
    convert.save_hf(convert.load_flax(tmp_path / "flax"), tmp_path / "hf")
    before, after = convert.read_hf_weights(hf_dir), convert.read_hf_weights(tmp_path / "hf")
    assert before.keys() == after.keys() and "decoder.weight" not in after
    for key, value in before.items():
        assert after[key].dtype == value.dtype and np.array_equal(after[key], value), key
    loaded, info = transformers.AutoModelForMaskedLM.from_pretrained(
        tmp_path / "hf", output_loading_info=True, attn_implementation=attn
    )
    assert isinstance(loaded, transformers.ModernBertForMaskedLM)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert loaded.decoder.weight is loaded.model.embeddings.tok_embeddings.weight
    ids, mask, _ = _padded_batch()
    assert np.array_equal(_torch_logits(loaded.eval(), ids, mask), _torch_logits(torch_model, ids, mask))


def test_modernbert_bfloat16_checkpoint_round_trips_bit_identical(tmp_path):
    torch_model = _random_torch_model("biased", "eager").to(torch.bfloat16)
    torch_model.save_pretrained(tmp_path / "src")
    model = convert.load_hf(tmp_path / "src")
    assert model.config.checkpoint_dtype == "bfloat16"
    convert.save_hf(model, tmp_path / "out")
    before, after = convert.read_hf_weights(tmp_path / "src"), convert.read_hf_weights(tmp_path / "out")
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert after[key].dtype == value.dtype == jnp.bfloat16 and np.array_equal(after[key], value), key


def test_modernbert_config_matches_transformers_reading_of_it(tiny):
    """Our config.json is read by transformers as the same model (layer types, rope thetas, window), and
    transformers' own config.json (new and legacy spellings) is read by us as the same model."""
    _, _, torch_model, model, _ = tiny
    ours = model.config
    theirs = transformers.ModernBertConfig.from_dict(ours.to_hf_dict())
    assert theirs.layer_types == list(ours.layer_types) == torch_model.config.layer_types
    assert theirs.sliding_window == ours.sliding_window == torch_model.config.sliding_window
    for layer_type in ("full_attention", "sliding_attention"):
        assert theirs.rope_parameters[layer_type]["rope_theta"] == ours.rope_theta(layer_type)
    assert ModernBertConfig.from_hf_dict(torch_model.config.to_dict()) == ours
    assert ModernBertConfig.from_hf_dict(ours.to_hf_dict()) == ours

    legacy = {
        k: v for k, v in torch_model.config.to_dict().items() if k not in ("layer_types", "rope_parameters")
    }
    legacy.update(global_attn_every_n_layers=2, global_rope_theta=5e4, local_rope_theta=2e3)
    theirs = transformers.ModernBertConfig.from_dict(legacy)
    read = ModernBertConfig.from_hf_dict(legacy)
    assert list(read.layer_types) == theirs.layer_types
    assert read.global_rope_theta == theirs.rope_parameters["full_attention"]["rope_theta"] == 5e4
    assert read.local_rope_theta == theirs.rope_parameters["sliding_attention"]["rope_theta"] == 2e3


def test_modernbert_bf16_compute_is_finite_and_close(tiny):
    """bfloat16 compute (float32 params): finite with padding, float32 logits, max abs diff to float32
    <= 5% of max |logits|."""
    _, _, _, model, _ = tiny
    bf16 = build_model(model.config, dtype=jnp.bfloat16)
    nnx.update(bf16, nnx.state(model, nnx.Param))
    ids, mask, _ = _padded_batch()
    ref = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    out = bf16(jnp.asarray(ids), jnp.asarray(mask))
    assert out.dtype == jnp.float32 and bf16.encode(jnp.asarray(ids), jnp.asarray(mask)).dtype == jnp.bfloat16
    assert bool(jnp.isfinite(out).all())
    err = float(np.abs(np.asarray(out) - ref).max())
    assert 0 < err <= 0.05 * np.abs(ref).max()
