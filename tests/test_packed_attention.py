"""Document-local attention for packed documents and the attention kernels in the models.

The invariance that proves packing correct: a document's per-token logits and loss are the same (fp32,
<= 1e-5) packed with others as alone in a padded block, for BERT, RoBERTa and ModernBERT, in JAX and in
torch, with every attention kernel that runs on a CPU. And every kernel equals the reference (eager) in
the models, logits, loss and every parameter's gradient, with and without packing (the kernels alone:
tests/test_attention.py).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from wwm.data import Packer, SpecialIds
from wwm.data.packing import model_position_ids, piece_positions
from wwm.errors import WWMError
from wwm_jax.attention import check_kernel
from wwm_jax.modeling import EncoderConfig, build_model

TOL = 1e-5
V, L = 97, 48
SPECIALS = {"bert": SpecialIds(cls=2, sep=3, pad=0, mask=4, vocab_size=V),
            "roberta": SpecialIds(cls=0, sep=2, pad=1, mask=4, vocab_size=V)}  # fmt: skip


@pytest.fixture(autouse=True)
def _highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def tiny_config(model_type: str) -> EncoderConfig:
    sp = SPECIALS[model_type]
    return EncoderConfig(
        model_type=model_type, vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=L + 4, pad_token_id=sp.pad,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip


def documents(seed=0, lengths=(7, 15, 3, 60, 11, 20)):
    rng = np.random.default_rng(seed)
    return [rng.integers(5, V, n).astype(np.int32) for n in lengths]


def packed_blocks(docs, sp):
    """The docs packed (packed_documents) and, per document piece, (block, start column, length)."""
    packer = Packer(L, "packed_documents", sp)
    ids = np.concatenate(docs)
    lengths = np.array([len(d) for d in docs])
    blocks = packer.add(ids, np.arange(ids.size, dtype=np.int32), lengths)
    last = packer.finish()
    from wwm.data import Blocks

    return Blocks.concat([blocks, last], L)


def alone_blocks(blocks):
    """Each piece of the packed blocks alone at the start of its own padded block (doc_per_block)."""
    rows, spans = [], []
    pad = int(blocks.input_ids[0, -1]) if blocks.lengths[0] < L else None
    for b in range(len(blocks)):
        seg = blocks.segment_ids[b]
        for s in range(1, int(seg.max()) + 1):
            cols = np.flatnonzero(seg == s)
            row = np.full(L, -1, dtype=np.int32)
            row[: cols.size] = blocks.input_ids[b, cols]
            rows.append(row)
            spans.append((b, cols))
    del pad
    return rows, spans


def _alone_inputs(rows, pad):
    ids = np.stack([np.where(r >= 0, r, pad) for r in rows])
    mask = np.stack([(r >= 0).astype(np.int32) for r in rows])
    return ids, mask


def _labels(ids, mask, seed=1):
    rng = np.random.default_rng(seed)
    pick = (rng.random(ids.shape) < 0.3) & (mask > 0)
    return np.where(pick, ids, -100)


def _ce(logits, labels):
    logits = np.asarray(logits, dtype=np.float64)
    m = labels != -100
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    picked = np.take_along_axis(logits, np.where(m, labels, 0)[..., None], -1)[..., 0]
    return float(((lse - picked) * m).sum())


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@pytest.mark.parametrize("attention", ["eager", "xla", "flash"])
def test_packed_invariance_jax(model_type, attention):
    sp = SPECIALS[model_type]
    cfg = tiny_config(model_type)
    model = build_model(cfg, attention=attention, seed=3)
    blocks = packed_blocks(documents(), sp)
    seg = blocks.segment_ids
    assert seg.max() >= 2  # several pieces share a block
    positions = model_position_ids(piece_positions(seg), seg, model_type, sp.pad)
    packed = np.asarray(model(blocks.input_ids, seg > 0, segment_ids=seg, position_ids=positions))
    reference = build_model(cfg, seed=3)  # eager, each piece alone in a padded row
    rows, spans = alone_blocks(blocks)
    ids, mask = _alone_inputs(rows, sp.pad)
    alone = np.asarray(reference(ids, mask))
    labels_alone = _labels(ids, mask)
    for i, (b, cols) in enumerate(spans):
        np.testing.assert_allclose(packed[b, cols], alone[i, : cols.size], atol=TOL, rtol=0)
        lab = labels_alone[i, : cols.size]
        assert abs(_ce(packed[b, cols], lab) - _ce(alone[i, : cols.size], lab)) <= TOL * max(
            1, (lab >= 0).sum()
        )


def _torch_model(model_type, attn):
    from transformers import BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

    cfg = tiny_config(model_type).to_hf_dict()
    cls, ccls = (
        (RobertaForMaskedLM, RobertaConfig) if model_type == "roberta" else (BertForMaskedLM, BertConfig)
    )
    hf = ccls(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "dtype")})
    from wwm_torch.model import torch_attention

    torch.manual_seed(0)
    return cls._from_config(hf, attn_implementation=torch_attention(attn)).eval()


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@pytest.mark.parametrize("attn", ["eager", "sdpa", "flash"])
def test_packed_invariance_torch(model_type, attn):
    from wwm_torch.trainer import packed_inputs

    sp = SPECIALS[model_type]
    model = _torch_model(model_type, attn)
    blocks = packed_blocks(documents(), sp)
    seg = torch.as_tensor(blocks.segment_ids, dtype=torch.long)
    inputs = {"input_ids": torch.as_tensor(blocks.input_ids, dtype=torch.long),
              "attention_mask": (seg > 0).long(), "segment_ids": seg,
              "position_ids": torch.as_tensor(piece_positions(blocks.segment_ids), dtype=torch.long)}  # fmt: skip
    with torch.no_grad():
        packed = model(**packed_inputs(model, inputs)).logits.numpy()
        rows, spans = alone_blocks(blocks)
        ids, mask = _alone_inputs(rows, sp.pad)
        alone = model(
            input_ids=torch.as_tensor(ids).long(), attention_mask=torch.as_tensor(mask).long()
        ).logits
    alone = alone.numpy()
    labels_alone = _labels(ids, mask)
    for i, (b, cols) in enumerate(spans):
        np.testing.assert_allclose(packed[b, cols], alone[i, : cols.size], atol=TOL, rtol=0)
        lab = labels_alone[i, : cols.size]
        assert abs(_ce(packed[b, cols], lab) - _ce(alone[i, : cols.size], lab)) <= TOL * max(
            1, (lab >= 0).sum()
        )


def _modernbert_config():
    """Two layers, one global and one local (every layer compiles its own kernel: fewer is faster)."""
    from wwm_jax.modernbert import ModernBertConfig

    sp = SPECIALS["bert"]
    return ModernBertConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=L, local_attention=8, layer_types=("full_attention", "sliding_attention"),
        pad_token_id=sp.pad, bos_token_id=sp.cls, cls_token_id=sp.cls, eos_token_id=sp.sep, sep_token_id=sp.sep,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_flash_equals_eager_in_the_models(family):
    """Packed rows with padding: logits (every position), loss and every parameter's gradient of flash equal
    eager's (fp32, highest precision: logits 1e-5 abs, loss 1e-5 rel, gradients 1e-5 abs + 1e-4 rel), BERT
    (one global layer) and ModernBERT (a global and a local layer of +-4). Every kernel alone, with and without
    packing and windows: tests/test_attention.py."""
    from wwm_jax import modernbert

    blocks = packed_blocks(documents(1, (40, 9, 30, 5, 70)), SPECIALS["bert"])
    mask = blocks.segment_ids > 0
    labels = _labels(blocks.input_ids, mask)
    seg = blocks.segment_ids
    kwargs = {"segment_ids": seg, "position_ids": piece_positions(seg)}
    one_layer = dataclasses.replace(tiny_config("bert"), num_hidden_layers=1)
    build = (lambda a: build_model(one_layer, attention=a, seed=5)) if family == "bert" else (
        lambda a: modernbert.build_model(_modernbert_config(), attention=a, seed=5))  # fmt: skip

    def loss_and_grads(attention):
        graph, params = nnx.split(build(attention), nnx.Param)

        def loss(p):
            logits = nnx.merge(graph, p)(blocks.input_ids, mask, **kwargs)
            ce = jax.nn.log_softmax(logits)
            picked = jnp.take_along_axis(ce, jnp.where(labels >= 0, labels, 0)[..., None], -1)[..., 0]
            return -jnp.sum(picked * (labels >= 0)), logits

        (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return value, np.asarray(logits), jax.tree.leaves(grads)

    ref, got = loss_and_grads("eager"), loss_and_grads("flash")
    np.testing.assert_allclose(got[1], ref[1], atol=TOL, rtol=0)
    assert abs(float(got[0]) - float(ref[0])) <= TOL * abs(float(ref[0]))
    for g, r in zip(got[2], ref[2], strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5, rtol=1e-4)


def test_packed_backend_refusals():
    """A kernel that cannot run here is refused with one clear line, never a silent fallback."""
    from wwm.attention import implementation
    from wwm_torch.trainer import torch_attention

    if jax.default_backend() != "gpu":
        with pytest.raises(WWMError, match="cuDNN flash attention needs an NVIDIA GPU"):
            check_kernel(implementation("cudnn", "jax"))
    with pytest.raises(WWMError, match="no attention dropout"):
        check_kernel("flash", attention_dropout=0.1)
    assert check_kernel("flash", attention_dropout=0.1, training=False).name == "flash"
    assert implementation("auto", "jax") == implementation("eager", "jax") == "eager"
    assert torch_attention("auto") == "sdpa" and torch_attention("eager") == "eager"
    assert torch_attention("flash") == torch_attention("blockwise") == "wwm_blockwise"  # its old name
    with pytest.raises(WWMError, match="xla is a jax kernel"):
        torch_attention("xla")
    if not torch.cuda.is_available():
        with pytest.raises(WWMError, match="flash-attn package and a CUDA GPU"):
            torch_attention("flash_attention_2")


def _modernbert_torch(attn: str):
    """A tiny transformers ModernBERT (window +-4, global every 2nd layer), every parameter perturbed."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    from wwm_torch.model import torch_attention

    sp = SPECIALS["bert"]
    cfg = ModernBertConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=L, local_attention=8, global_attn_every_n_layers=2, pad_token_id=sp.pad,
        bos_token_id=sp.cls, cls_token_id=sp.cls, eos_token_id=sp.sep, sep_token_id=sp.sep,
    )  # fmt: skip
    torch.manual_seed(0)
    model = ModernBertForMaskedLM._from_config(cfg, attn_implementation=torch_attention(attn))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa", "flash"])
def test_modernbert_packed_invariance_torch(attn):
    """transformers' ModernBERT with packed documents (wwm_torch.model.packed_inputs): each piece's logits
    equal the piece alone in a padded row (<= 1e-5), with eager, sdpa and flash attention."""
    from wwm_torch.model import packed_inputs

    sp = SPECIALS["bert"]
    model = _modernbert_torch(attn)
    blocks = packed_blocks(documents(), sp)
    seg = torch.as_tensor(blocks.segment_ids, dtype=torch.long)
    assert int(seg.max()) >= 2
    inputs = {"input_ids": torch.as_tensor(blocks.input_ids, dtype=torch.long),
              "attention_mask": (seg > 0).long(), "segment_ids": seg,
              "position_ids": torch.as_tensor(piece_positions(blocks.segment_ids), dtype=torch.long)}  # fmt: skip
    rows, spans = alone_blocks(blocks)
    ids, mask = _alone_inputs(rows, sp.pad)
    reference = _modernbert_torch("eager")  # transformers' own masks from a 2D padding mask
    with torch.no_grad():
        packed = model(**packed_inputs(model, inputs)).logits.numpy()
        alone = reference(input_ids=torch.as_tensor(ids).long(), attention_mask=torch.as_tensor(mask).long())
    alone = alone.logits.numpy()
    for i, (b, cols) in enumerate(spans):
        np.testing.assert_allclose(packed[b, cols], alone[i, : cols.size], atol=TOL, rtol=0)
    # Negative control: the same rows without the segment ids attend across documents.
    with torch.no_grad():
        mixed = reference(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).logits.numpy()
    assert (
        max(np.abs(mixed[b, cols] - alone[i, : cols.size]).max() for i, (b, cols) in enumerate(spans)) > 1e-3
    )
