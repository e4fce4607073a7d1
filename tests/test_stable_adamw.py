"""StableAdamW (`optim.name: stable_adamw`) in both trainers, equal to ModernBERT's optimizer.

* torch-optimi's StableAdamW (the torch trainer's) equals a float64 transcription of ModernBERT's own
  src/optimizer.py rule (AnswerDotAI/ModernBERT, `_foreach_stableadamw`), both weight-decay modes;
* the JAX optax chain equals the torch optimizer as the Trainer builds it (`create_optimizer` with our
  `optimizer_cls_and_kwargs`, HF's scheduler) step by step over 100 updates of a tiny BERT's parameters,
  <= 1e-6 relative per tensor after every update, with gradients that trip the RMS clipping;
* negative controls: AdamW (ModernBERT's rule without the clip) fails the same comparisons.
"""

from __future__ import annotations

import numpy as np
import pytest

from wwm.config import OptimConfig
from wwm.errors import WWMError

STEPS = 100
TOL = 1e-6  # relative, ||p_jax - p_torch|| / ||p_torch|| per tensor, after every update


def _tiny_bert():
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    return BertForMaskedLM(cfg)


SPIKES = (7, 40, 77)  # steps whose attention gradients are scaled by 300: a loss spike the clip catches


def _batch(seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 97, (4, 24), generator=g)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    return ids, labels


def _nest(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *head, last = name.split(".")
        for key in head:
            node = node.setdefault(key, {})
        node[last] = value
    return tree


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = np.asarray(value)
    return out


def _optim(decouple_lr: bool, name: str = "stable_adamw") -> OptimConfig:
    return OptimConfig(
        name=name, decouple_lr=decouple_lr and name == "stable_adamw", learning_rate=2e-3,
        weight_decay=0.1 if decouple_lr else 10.0,  # decay that moves the weights visibly in 100 steps
        beta1=0.9, beta2=0.98, eps=1e-6, warmup_steps=10, schedule="wsd", decay_steps=30,
        max_grad_norm=None,
    )  # fmt: skip


def _torch_trajectory(model, optim: OptimConfig, tmp_path, grads=None):
    """(optimizer, parameters after each update, the gradients used), through the Trainer's own optimizer
    and scheduler set-up. Without `grads`, each update's gradient is the tiny model's MLM loss gradient
    at its current weights on a fixed batch (x300 on the attention tensors at SPIKES)."""
    import torch
    from transformers import Trainer, TrainingArguments

    from wwm_torch.optim import optimizer_cls_and_kwargs

    args = TrainingArguments(
        output_dir=str(tmp_path), learning_rate=optim.learning_rate, weight_decay=optim.weight_decay,
        adam_beta1=optim.beta1, adam_beta2=optim.beta2, adam_epsilon=optim.eps,
        lr_scheduler_type="warmup_stable_decay", warmup_steps=optim.warmup_steps, max_steps=STEPS,
        lr_scheduler_kwargs={"num_decay_steps": optim.decay_steps, "decay_type": optim.decay_shape,
                             "warmup_type": "linear", "min_lr_ratio": 0.0},
        use_cpu=True, report_to="none",
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(optim))
    trainer.create_optimizer_and_scheduler(STEPS)
    named = dict(model.named_parameters())
    ids, labels = _batch()
    out, used = [], []
    for t in range(len(grads) if grads is not None else STEPS):
        if grads is None:
            model.zero_grad()
            model(input_ids=ids, labels=labels).loss.backward()
            g = {n: p.grad.detach().numpy().copy() for n, p in named.items()}
            if t in SPIKES:
                g = {n: v * np.float32(300.0) if "attention" in n else v for n, v in g.items()}
        else:
            g = grads[t]
        used.append(g)
        for name, p in named.items():
            p.grad = torch.from_numpy(g[name].copy())  # optimi's foreach step reuses .grad as scratch
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        out.append({n: p.detach().numpy().copy() for n, p in named.items()})
    return trainer.optimizer, out, used


def _jax_trajectory(params: dict[str, np.ndarray], optim: OptimConfig, grads):
    """The parameters after each update (one jitted scan over the gradients)."""
    import jax

    from wwm_jax.optim import make_optimizer

    tx = make_optimizer(optim, STEPS)[0]
    tree = _nest(params)
    stacked = _nest({n: np.stack([g[n] for g in grads]) for n in params})

    @jax.jit
    def run(p, gs):
        def step(carry, g):
            p, s = carry
            updates, s = tx.update(g, s, p)
            p = jax.tree.map(lambda a, u: a + u, p, updates)
            return (p, s), p

        return jax.lax.scan(step, (p, tx.init(p)), gs)[1]

    out = _flatten(jax.device_get(run(tree, stacked)))
    return [{n: v[t] for n, v in out.items()} for t in range(len(grads))]


def _worst(a_steps, b_steps) -> float:
    worst = 0.0
    for a, b in zip(a_steps, b_steps, strict=True):
        for name in b:
            ref = np.linalg.norm(b[name].astype(np.float64))
            worst = max(worst, np.linalg.norm(a[name].astype(np.float64) - b[name]) / max(ref, 1e-30))
    return worst


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """torch's two OpenMP threads on two shared cores run a tiny model 15x slower than one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def params():
    return {n: p.detach().numpy().copy() for n, p in _tiny_bert().named_parameters()}


def _model_at(params):
    import torch

    model = _tiny_bert()
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(torch.from_numpy(params[n]))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("decouple_lr", [False, True])
def test_jax_equals_torch_step_by_step(params, decouple_lr, tmp_path):
    import jax

    optim = _optim(decouple_lr)
    opt, torch_steps, grads = _torch_trajectory(_model_at(params), optim, tmp_path)
    assert type(opt).__name__ == "StableAdamW" and type(opt).__module__.startswith("optimi")
    with jax.default_matmul_precision("highest"):
        jax_steps = _jax_trajectory(params, optim, grads)
    assert _worst([params] * STEPS, torch_steps) > 1e-2  # the weights move far beyond the tolerance
    worst = _worst(jax_steps, torch_steps)
    assert worst <= TOL, worst

    # Negative control: the same comparison against AdamW (ModernBERT's rule without the clip) fails.
    adamw, _ = _modernbert_rule(params, grads, clip=False, **_rule_kwargs(optim, _model_at(params)))
    assert _worst(adamw, torch_steps) > 1e3 * TOL


def _rule_kwargs(optim: OptimConfig, model) -> dict:
    import transformers

    from wwm_jax.optim import lr_factor

    decay_names = set(transformers.Trainer.get_decay_parameter_names(None, model))
    assert decay_names and not any("LayerNorm" in n or n.endswith("bias") for n in decay_names)

    def lr_at(k):
        decay = optim.wsd_decay_steps(STEPS)
        return optim.learning_rate * float(lr_factor(k, schedule="wsd", warmup_steps=optim.warmup_steps,
                                                     max_steps=STEPS, decay_steps=decay))  # fmt: skip

    return dict(lr_at=lr_at, beta1=optim.beta1, beta2=optim.beta2, eps=optim.eps,
                weight_decay=optim.weight_decay, decays={n: n in decay_names for n, _ in model.named_parameters()},
                decouple_lr=optim.decouple_lr, max_lr=optim.learning_rate)  # fmt: skip


def _modernbert_rule(
    params, grads, *, lr_at, beta1, beta2, eps, weight_decay, decays, decouple_lr, max_lr, clip=True
):
    """ModernBERT's src/optimizer.py `_foreach_stableadamw`, transcribed per tensor in float64 numpy
    (`clip=False`: without the RMS clip, the negative control)."""
    p = {n: v.astype(np.float64) for n, v in params.items()}
    m = {n: np.zeros_like(v) for n, v in p.items()}
    v2 = {n: np.zeros_like(v) for n, v in p.items()}
    trips, out = 0, []
    for t, g in enumerate(grads, start=1):
        b1_hat = (beta1**t - beta1) / (beta1**t - 1)  # optimi.utils.debias_beta
        b2_hat = (beta2**t - beta2) / (beta2**t - 1)
        lr = lr_at(t - 1)
        for n in p:
            gn = g[n].astype(np.float64)
            m[n] = m[n] + (1 - b1_hat) * (gn - m[n])  # lerp
            v2[n] = v2[n] * b2_hat + gn * gn * (1 - b2_hat)
            rms = np.sqrt(np.mean(gn * gn / np.maximum(v2[n], eps**2)))
            trips += rms > 1
            neg_lr = -lr / max(1.0, rms) if clip else -lr
            wd = weight_decay if decays[n] else 0.0
            if wd:
                p[n] = p[n] * (1 + (neg_lr / max_lr) * wd if decouple_lr else 1 + neg_lr * wd)
            p[n] = p[n] + neg_lr * m[n] / (np.sqrt(v2[n]) + eps)
        out.append({n: v.copy() for n, v in p.items()})
    return out, trips


@pytest.mark.parametrize("decouple_lr", [False, True])
def test_optimi_is_modernberts_rule(params, decouple_lr, tmp_path):
    """torch-optimi's StableAdamW, as the Trainer builds it, is ModernBERT's optimizer rule."""
    optim = _optim(decouple_lr)
    model = _model_at(params)
    rng = np.random.default_rng(1)  # noise gradients of drifting scale: the second moment lags, clips trip
    grads = [{n: (rng.normal(size=v.shape) * 10.0 ** rng.uniform(-2, 1)).astype(np.float32)
              for n, v in params.items()} for _ in range(40)]  # fmt: skip
    _, torch_steps, _ = _torch_trajectory(model, optim, tmp_path, grads)
    kw = _rule_kwargs(optim, model)
    reference, trips = _modernbert_rule(params, grads, **kw)
    assert trips > 10  # the clip is exercised
    assert _worst(torch_steps, reference) <= TOL
    # Negative control: the same rule without the clip is far from it.
    assert _worst(torch_steps, _modernbert_rule(params, grads, clip=False, **kw)[0]) > 1e3 * TOL


def test_config_refusals():
    with pytest.raises(WWMError, match=r"decouple_lr applies to optim\.name stable_adamw"):
        OptimConfig(decouple_lr=True)
    assert OptimConfig(name="stable_adamw", decouple_lr=True).decouple_lr
