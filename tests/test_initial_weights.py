"""`wwm.initial_weights`: a fresh model's weights, drawn in numpy as transformers' `_init_weights` draws
them, keyed by (seed, tensor name); both trainers start from them, so a fresh JAX model and a fresh torch
model are the same numbers (the trainers' own code paths, bit for bit) and have the same first loss."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

from wwm.errors import WWMError
from wwm.initial_weights import initial_state, tensor_specs, tied_keys, with_tied

FAMILIES = ("bert", "roberta", "modernbert")
# ModernBERT with every bias on and norm biases (base's switches are all off), decoder bias off.
ALL_BIASES = dict(
    norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True, decoder_bias=False
)


def _hf(model_type: str, *, vocab=50, hidden=16, layers=2, inter=32, pad=3, **extra) -> dict:
    """A config.json dict as `ModelConfig.hf_config_dict` writes it (the fields that shape the model)."""
    d = dict(model_type=model_type, vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
             num_attention_heads=2, intermediate_size=inter, pad_token_id=pad, max_position_embeddings=40,
             initializer_range=0.02, tie_word_embeddings=True)  # fmt: skip
    if model_type == "modernbert":
        d.update(cls_token_id=1, sep_token_id=2, bos_token_id=1, eos_token_id=2, local_attention=8,
                 initializer_cutoff_factor=2.0)  # fmt: skip
    else:
        d.update(type_vocab_size=2 if model_type == "bert" else 1)
    d.update(extra)
    return d


def _hf_model(hf: dict, seed: int = 0):
    """transformers' own fresh model of `hf` (its `_init_weights`, torch RNG)."""
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM

    d = dict(hf)
    config = AutoConfig.for_model(d.pop("model_type"), **d)
    torch.manual_seed(seed)
    return AutoModelForMaskedLM.from_config(config, attn_implementation="eager")


CASES = [("bert", {}), ("roberta", {}), ("modernbert", {}), ("modernbert", ALL_BIASES)]
IDS = ["bert", "roberta", "modernbert", "modernbert-all-biases"]


# ------------------------------------------------------------------------------------- (a) keys, shapes
@pytest.mark.parametrize(("model_type", "extra"), CASES, ids=IDS)
def test_keys_and_shapes_are_transformers_state_dict(model_type, extra, tmp_path):
    """With the tied copies added, the keys and shapes are `from_config(...).state_dict()`'s (which a
    strict load_state_dict takes); without them, `save_pretrained`'s; the tied map is transformers'."""
    import torch
    from safetensors import safe_open

    hf = _hf(model_type, **extra)
    model = _hf_model(hf)
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = initial_state(hf, seed=0)
    assert {k: v.shape for k, v in with_tied(state, hf).items()} == theirs
    assert dict(model._tied_weights_keys) == tied_keys(hf)
    assert state.keys() == theirs.keys() - tied_keys(hf).keys()
    assert all(v.dtype == np.float32 for v in state.values())
    assert [s.key for s in tensor_specs(hf)] == list(state)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in with_tied(state, hf).items()}, strict=True)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="np") as f:
        assert set(f.keys()) == state.keys()


# ------------------------------------------------------------------------------------ (b) distributions
def _truncated_std(cutoff: float) -> float:
    """The std of a standard normal conditioned on [-c, c]: sqrt(1 - 2 c phi(c) / (2 Phi(c) - 1))."""
    phi = math.exp(-(cutoff**2) / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(cutoff / math.sqrt(2))
    return math.sqrt(1 - 2 * cutoff * phi / mass)


def _std_tolerance(n: int) -> float:
    """Relative tolerance on a sample std of n draws: 6 standard errors (1/sqrt(2n) each)."""
    return 6 / math.sqrt(2 * n)


MEDIUM = dict(vocab=1000, hidden=64, layers=2, inter=256, pad=5)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_bert_and_roberta_follow_the_hf_rules(model_type):
    """normal(0, initializer_range) for Linear weights and embeddings, zero biases (the head's too), unit
    LayerNorm weights; the padding row zeroed in the word embeddings (and RoBERTa's positions)."""
    hf = _hf(model_type, **MEDIUM)
    state = initial_state(hf, seed=7)
    for key, x in state.items():
        if key.endswith("LayerNorm.weight") or key.endswith("layer_norm.weight"):
            assert np.all(x == 1), key
        elif key.endswith("bias"):
            assert np.all(x == 0), key
        else:
            rows = np.delete(x, 5, axis=0) if "word_embeddings" in key or (
                model_type == "roberta" and "position_embeddings" in key) else x  # fmt: skip
            assert abs(rows.std() / 0.02 - 1) < _std_tolerance(rows.size), key
            assert abs(rows.mean()) < 6 * 0.02 / math.sqrt(rows.size), key
    p = model_type
    assert np.all(state[f"{p}.embeddings.word_embeddings.weight"][5] == 0)
    assert np.all(state[f"{p}.embeddings.word_embeddings.weight"][4] != 0)
    position_pad = state[f"{p}.embeddings.position_embeddings.weight"][5]
    assert np.all(position_pad == 0) if model_type == "roberta" else np.all(position_pad != 0)
    # transformers reads initializer_range 0 / None as 0.02
    zero = initial_state({**hf, "initializer_range": 0.0}, seed=7)
    assert np.array_equal(
        zero[f"{p}.encoder.layer.0.output.dense.weight"], state[f"{p}.encoder.layer.0.output.dense.weight"]
    )


def test_modernbert_follows_the_hf_rules():
    """Truncated normal at +-cutoff * std: "in" (Wqkv, Wi) and "embedding" std = initializer_range, "out"
    (attn.Wo, mlp.Wo, head.dense) = initializer_range / sqrt(2 * layers); the padding row is not zeroed;
    biases 0, norm weights 1; cutoff None means 3."""
    hf = _hf("modernbert", **MEDIUM, **ALL_BIASES)
    state = initial_state(hf, seed=7)
    out = 0.02 / math.sqrt(2 * 2)
    rules = {"attn.Wqkv.weight": 0.02, "mlp.Wi.weight": 0.02, "tok_embeddings.weight": 0.02,
             "attn.Wo.weight": out, "mlp.Wo.weight": out, "head.dense.weight": out}  # fmt: skip
    cutoff = 2.0
    checked = 0
    for key, x in state.items():
        std = next((v for k, v in rules.items() if key.endswith(k)), None)
        if std is None:
            assert np.all(x == (1 if key.endswith("norm.weight") else 0)), key
            continue
        checked += 1
        assert np.abs(x).max() <= cutoff * std * (1 + 1e-6), key  # the bound, up to float32 rounding
        assert abs(x.std() / (std * _truncated_std(cutoff)) - 1) < _std_tolerance(x.size), key
    assert checked == 2 * 4 + 2  # every layer's 4 matrices, the embeddings and the head
    emb = state["model.embeddings.tok_embeddings.weight"]  # 64,000 draws: the bound is reached
    assert np.abs(emb).max() > 0.98 * cutoff * 0.02 and np.all(emb[5] != 0)
    wide = initial_state({**hf, "initializer_cutoff_factor": None}, seed=7)[
        "model.embeddings.tok_embeddings.weight"
    ]
    assert 2.5 * 0.02 < np.abs(wide).max() <= 3 * 0.02 * (1 + 1e-6)


@pytest.mark.parametrize(("model_type", "extra"), CASES, ids=IDS)
def test_each_tensor_is_distributed_as_transformers_draws_it(model_type, extra):
    """Against transformers' own fresh model (not our reading of its code): constant tensors are equal,
    random ones have the same std (6 standard errors of both samples) and, truncated, the same bound."""
    hf = _hf(model_type, **MEDIUM, **extra)
    theirs = {k: v.detach().numpy() for k, v in _hf_model(hf, seed=1).state_dict().items()}
    for key, ours in initial_state(hf, seed=1).items():
        ref = theirs[key]
        if np.all(ref == ref.flat[0]):
            assert np.array_equal(ours, ref), key
            continue
        tol = _std_tolerance(ours.size) * math.sqrt(2)
        assert abs(ours.std() / ref.std() - 1) < tol, (key, ours.std(), ref.std())
        assert np.array_equal(np.all(ours == 0, axis=-1), np.all(ref == 0, axis=-1)), key  # zeroed rows
        if model_type == "modernbert":
            assert np.abs(ours).max() <= np.abs(ref).max() * 1.05 + 1e-9, key


# ---------------------------------------------------------------------------------- (c) seeds, streams
@pytest.mark.parametrize("model_type", FAMILIES)
def test_same_seed_is_bit_identical_and_another_seed_differs(model_type):
    hf = _hf(model_type)
    a, b, c = initial_state(hf, 3), initial_state(hf, 3), initial_state(hf, 4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    random = [k for k in a if a[k].std() > 0]
    assert random and all(not np.array_equal(a[k], c[k]) for k in random)


def test_a_tensor_depends_only_on_the_seed_and_its_name():
    """Each tensor has its own stream: one more layer or another vocabulary leaves every other tensor
    as it was; two tensors of one shape differ."""
    small, deep = initial_state(_hf("bert"), 0), initial_state(_hf("bert", layers=3), 0)
    assert small.keys() < deep.keys()
    assert all(np.array_equal(small[k], deep[k]) for k in small)
    wider = initial_state(_hf("bert", vocab=60), 0)
    assert np.array_equal(
        wider["bert.encoder.layer.1.output.dense.weight"], small["bert.encoder.layer.1.output.dense.weight"]
    )
    assert not np.array_equal(small["bert.encoder.layer.0.attention.self.query.weight"],
                              small["bert.encoder.layer.0.attention.self.key.weight"])  # fmt: skip


def test_the_draws_are_pinned():
    """The numbers themselves, so that a change of the streams (numpy's PCG64 / float32 ziggurat, the key
    scheme) is seen: fresh runs of the same config would no longer start where they did."""
    state = initial_state(_hf("bert"), 0)
    got = state["bert.embeddings.word_embeddings.weight"][0, :4]
    np.testing.assert_array_equal(got, np.array(PINNED, np.float32))


PINNED = [-0.003746687201783061, 0.019678601995110512, -0.018379461020231247, 0.001606957521289587]


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(WWMError, match="model_type 'albert'"):
        initial_state({**_hf("bert"), "model_type": "albert"}, 0)
    for seed in (-1, 2**64, 1.5, True):
        with pytest.raises(WWMError, match=r"seed must be an integer in \[0, 2\^64\)"):
            initial_state(_hf("bert"), seed)
    with pytest.raises(WWMError, match="pad_token_id 50 is outside"):
        initial_state(_hf("roberta", pad=50), 0)


# ----------------------------------------------------------- (d, e) the two trainers start bit-identical
TINY_MODEL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
L, B = 32, 8


def _run_config(model_type: str, seed: int):
    from wwm.config import RunConfig, from_dict

    model = {"type": model_type, **TINY_MODEL}
    if model_type == "modernbert":
        model["modernbert"] = {"local_attention": 8, "global_attn_every_n_layers": 2}
    return from_dict(RunConfig, {
        "seed": seed, "output_dir": "unused", "model": model, "data": {"max_seq_len": L}, "masking": {"mask_prob": 0.15, "seed": 3},
        "train": {"framework": "jax", "global_batch_size": B, "max_steps": 1, "dtype": "float32",
                  "attn_implementation": "eager"},
        "optim": {"warmup_steps": 0, "learning_rate": 1e-3},
        "logging": {"progress_bar": False, "tensorboard": False},
    })  # fmt: skip


@pytest.fixture(params=FAMILIES)
def family(request, wordpiece_tokenizer, bpe_tokenizer, modernbert_tokenizer):
    from torch_ddp_worker import synthetic_blocks

    tokenizer = {"bert": wordpiece_tokenizer, "roberta": bpe_tokenizer, "modernbert": modernbert_tokenizer}
    tok = tokenizer[request.param]
    return SimpleNamespace(
        model_type=request.param, tokenizer=tok, blocks=synthetic_blocks(tok, 16, L, seed=1)
    )


@pytest.fixture
def fp32_matmuls():
    """Parity precision: XLA's full float32 matmuls, no TF32 in torch (matters on GPUs only)."""
    import jax
    import torch

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with jax.default_matmul_precision("highest"):
        yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def _jax_start(config, family):
    """The JAX trainer's step set-up (`build_step`: the model, the placed state, the compiled step) and
    its parameters in the HF layout."""
    from flax import nnx

    from wwm.masking import WholeWordMasker
    from wwm_jax import convert
    from wwm_jax.train import build_step, host_params

    masker = WholeWordMasker.from_tokenizer(family.tokenizer, config.masking)
    hf_config = config.model.hf_config_dict(family.tokenizer, config.data.max_seq_len)  # as `run` does
    setup = build_step(config, hf_config, masker, L)
    model = nnx.merge(setup.graphdef, host_params(setup.state))
    return setup, masker, convert.flax_to_hf_state(model, "float32")


def _torch_start(config, family):
    """The torch trainer (`build_trainer`, the Trainer `run` trains) and its state dict, tied copies out."""
    from wwm_torch.train import build_trainer

    prepared = SimpleNamespace(train=family.blocks, validation=None, tokenizer=family.tokenizer)
    torch_config = _with_framework(config, "torch")
    trainer, _, _ = build_trainer(torch_config, prepared)
    hf = torch_config.model.hf_config_dict(family.tokenizer, config.data.max_seq_len)
    state = {k: v.detach().numpy() for k, v in trainer.model.state_dict().items() if k not in tied_keys(hf)}
    return trainer, state


def _with_framework(config, framework: str):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, framework=framework))


def _differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not (a[k].dtype == b[k].dtype == np.float32 and np.array_equal(a[k], b[k]))]


def test_fresh_jax_and_torch_models_are_bit_identical_and_start_at_the_same_loss(
    family, fp32_matmuls, tmp_path
):
    """(d) The JAX trainer's `build_step` and the torch trainer's `build_trainer` on one config give the
    same float32 tensors, bit for bit, and the first step's loss on one global batch (each trainer's own
    loss: the JAX `train_step`, `WWMTrainer.compute_loss`) agrees to float32 rounding. (e) The same JAX
    model from another seed differs from the torch one in every random tensor: the check can fail."""
    import torch

    from wwm.data.loader import BatchIterator
    from wwm_jax import sharding as shd
    from wwm_jax.train import masked_host_batches
    from wwm_jax.train_step import from_micro_batches

    config = _run_config(family.model_type, seed=5)
    config = dataclasses.replace(config, output_dir=str(tmp_path / "run"))
    setup, masker, jax_state = _jax_start(config, family)
    trainer, torch_state = _torch_start(config, family)
    assert _differing(jax_state, torch_state) == []

    # One global batch, masked by the JAX trainer's own host pipeline; the same rows for torch.
    rows, _, _ = next(masked_host_batches(BatchIterator(family.blocks, B, config.seed), masker, 1))
    _, metrics = setup.step_fn(setup.state, shd.global_arrays(rows, setup.mesh, 1))
    jax_loss = float(metrics["loss"])
    inputs = {k: torch.as_tensor(from_micro_batches(v)).long() for k, v in rows.items()}
    model = trainer.model.eval()
    with torch.no_grad():
        torch_loss = float(trainer.compute_loss(model, inputs))
    assert int(metrics["masked_tokens"]) == int((inputs["labels"] != -100).sum()) > 0
    assert math.isclose(jax_loss, torch_loss, rel_tol=1e-6), (jax_loss, torch_loss)

    other = _jax_start(_run_config(family.model_type, seed=6), family)[2]
    random = [k for k in torch_state if torch_state[k].std() > 0]
    assert sorted(_differing(other, torch_state)) == sorted(random)
