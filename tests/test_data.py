"""The data pipeline: sources, packing, cache, order and sharding, resume, streaming, bad input."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wwm.config import DataConfig, RunConfig, TokenizerConfig, TokenizerTrainConfig
from wwm.data import (
    BatchIterator,
    BlockDataset,
    Blocks,
    DataPosition,
    Packer,
    SpecialIds,
    device_rows,
    epoch_order,
    host_rows,
    masked_batches,
    prepare_dataset,
    validation_batches,
    validation_mask,
)
from wwm.data.sources import SourceStats, iter_documents
from wwm.errors import WWMError
from wwm.masking import IGNORE_INDEX

# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wordpiece_dir(tmp_path_factory, wordpiece_tokenizer):
    path = tmp_path_factory.mktemp("wordpiece")
    wordpiece_tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory, bpe_tokenizer):
    path = tmp_path_factory.mktemp("bpe")
    bpe_tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def paragraphs(training_texts):
    return [p for p in training_texts if p.isascii()][:160]


@pytest.fixture
def corpus(tmp_path, paragraphs):
    """A text file: one paragraph a line, with a few empty lines."""
    path = tmp_path / "corpus.txt"
    lines = []
    for i, p in enumerate(paragraphs):
        lines.append(p)
        if i % 40 == 0:
            lines.append("   ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_config(tmp_path, tokenizer_dir, files, *, seed=0, word_policy="tokenizer", **data) -> RunConfig:
    data.setdefault("max_seq_len", 32)
    data.setdefault("cache_dir", str(tmp_path / "cache"))
    return RunConfig(
        data=DataConfig(source="files", train_files=tuple(str(f) for f in files), **data),
        tokenizer=TokenizerConfig(path=str(tokenizer_dir), word_policy=word_policy),
        seed=seed,
        output_dir=str(tmp_path / "out"),
    )


def content_of(blocks: Blocks, i: int) -> np.ndarray:
    return blocks.input_ids[i, 1 : blocks.lengths[i] - 1]


# --------------------------------------------------------------------------------------------------
# Packing (property tests on synthetic documents)
# --------------------------------------------------------------------------------------------------

SPECIALS = SpecialIds(cls=1, sep=2, pad=0, mask=3, vocab_size=1 << 20)


@st.composite
def documents(draw):
    """Documents as (word id per token) lists: non-decreasing ids with gaps, some -1 (special in text)."""
    docs = []
    for _ in range(draw(st.integers(0, 12))):
        n = draw(st.integers(0, 30))
        steps = draw(st.lists(st.sampled_from([0, 0, 1, 1, 1, 2, -1]), min_size=n, max_size=n))
        wids, w = [], 0
        for k, s in enumerate(steps):
            if s == -1:
                wids.append(-1)
                continue
            w += s if k else 0
            wids.append(w)
        docs.append(wids)
    return docs


def synthetic(docs: list[list[int]]):
    """Flat token ids that identify each token: 10 + its position in the corpus."""
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    wids = np.array([w for d in docs for w in d], dtype=np.int32)
    ids = np.arange(10, 10 + wids.size, dtype=np.int32)
    doc_of = np.repeat(np.arange(len(docs)), lengths)
    return ids, wids, lengths, doc_of


def word_runs(wids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A corpus-wide id of each token's word (a maximal run of equal non-negative ids in a document)."""
    doc_start = np.zeros(wids.size, dtype=bool)
    doc_start[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
    prev = np.concatenate([[-1], wids[:-1]])
    starts = (wids >= 0) & (doc_start | (wids != prev))
    return np.where(wids >= 0, np.cumsum(starts) - 1, -1)


def pack(docs, L, mode, cuts=()):
    ids, wids, lengths, _ = synthetic(docs)
    packer = Packer(L, mode, SPECIALS)
    parts, start_doc, start_tok = [], 0, 0
    for cut in [*sorted(set(cuts)), len(docs)]:
        n_tok = int(lengths[start_doc:cut].sum())
        parts.append(
            packer.add(
                ids[start_tok : start_tok + n_tok],
                wids[start_tok : start_tok + n_tok],
                lengths[start_doc:cut],
            )
        )
        start_doc, start_tok = cut, start_tok + n_tok
    parts.append(packer.finish())
    return Blocks.concat(parts, L), packer.stats


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=documents(),
    L=st.integers(4, 14),
    mode=st.sampled_from(["full_sentences", "doc_per_block"]),
    data=st.data(),
)
def test_packing_keeps_every_token_word_and_document_boundary(docs, L, mode, data):
    ids, wids, lengths, doc_of = synthetic(docs)
    runs = word_runs(wids, lengths)
    cuts = data.draw(st.lists(st.integers(0, len(docs)), max_size=3))
    blocks, stats = pack(docs, L, mode, cuts)
    whole, _ = pack(docs, L, mode)
    for a, b in zip(blocks, whole, strict=True):  # chunking the documents changes nothing
        np.testing.assert_array_equal(a, b)

    assert blocks.input_ids.shape == (len(blocks), L) and blocks.input_ids.dtype == np.int32
    assert stats.tokens == ids.size and stats.blocks == len(blocks)
    assert stats.long_documents == int((lengths > L - 2).sum())
    assert stats.padding == int(len(blocks) * L - blocks.lengths.sum())
    seen = []
    for i in range(len(blocks)):
        n = int(blocks.lengths[i])
        row, wrow = blocks.input_ids[i], blocks.word_ids[i]
        # Framing: CLS content SEP PAD...; specials and pads have word id -1.
        assert 3 <= n <= L
        assert row[0] == SPECIALS.cls and row[n - 1] == SPECIALS.sep
        assert (row[n:] == SPECIALS.pad).all() and (wrow[n:] == -1).all()
        assert wrow[0] == -1 and wrow[n - 1] == -1
        content, cw = row[1 : n - 1], wrow[1 : n - 1]
        is_sep = content == SPECIALS.sep
        if mode == "doc_per_block":
            assert not is_sep.any()
        else:
            assert not is_sep[0] and not is_sep[-1]  # a block never opens or closes with a separator
        if mode == "full_sentences" and i < len(blocks) - 1:
            assert (
                n >= L - 1
            )  # only the last block is padded (by one token where a separator fell at the end)
        tokens = content[~is_sep]
        seen.append(tokens)
        # Word ids: dense 0..W-1 in order, -1 exactly on separators and specials written in the text.
        orig = runs[tokens - 10]
        assert ((cw == -1) == (is_sep | (wids[np.maximum(content - 10, 0)] < 0) & ~is_sep)).all()
        words = cw[cw >= 0]
        if words.size:
            assert words[0] == 0 and set(np.diff(words)) <= {0, 1}
        # A block word = exactly one original word (a run inside one document), and vice versa.
        tok_w = cw[~is_sep]
        keep = tok_w >= 0
        pairs = {
            (int(bw), int(doc_of[t - 10]), int(ow))
            for bw, t, ow in zip(tok_w[keep], tokens[keep], orig[keep], strict=True)
        }
        assert len({p[0] for p in pairs}) == len(pairs) == len({p[1:] for p in pairs})
        # Documents inside a block are separated by one SEP (full_sentences) / not mixed (doc_per_block).
        docs_in_block = doc_of[tokens - 10]
        change = np.flatnonzero(np.diff(docs_in_block)) + 1
        sep_at = np.flatnonzero(is_sep)
        if mode == "doc_per_block":
            assert change.size == 0
        else:
            assert sep_at.size == change.size
            # the i-th separator sits right before the first token of the i-th new document
            assert (sep_at - np.arange(sep_at.size) == change).all()
    # Every token appears exactly once, in corpus order.
    all_tokens = np.concatenate(seen) if seen else np.zeros(0, dtype=np.int32)
    np.testing.assert_array_equal(all_tokens, ids)


def test_packing_worked_example():
    # Two documents "a b b" (words 0 1 1) and "c" with L = 6 (4 content tokens).
    ids = np.array([10, 11, 12, 20], dtype=np.int32)
    wids = np.array([0, 1, 1, 0], dtype=np.int32)
    packer = Packer(6, "full_sentences", SPECIALS)
    blocks = Blocks.concat([packer.add(ids, wids, [3, 1]), packer.finish()], 6)
    # Stream "a b b SEP c": the first run would end on the separator, so it ends one token early.
    np.testing.assert_array_equal(blocks.input_ids, [[1, 10, 11, 12, 2, 0], [1, 20, 2, 0, 0, 0]])
    np.testing.assert_array_equal(blocks.word_ids, [[-1, 0, 1, 1, -1, -1], [-1, 0, -1, -1, -1, -1]])
    np.testing.assert_array_equal(blocks.lengths, [5, 3])

    packer = Packer(5, "doc_per_block", SPECIALS)  # 3 content tokens: "a b b" fits, words cut at the edge
    blocks = Blocks.concat([packer.add([10, 11, 12, 13, 20], [0, 1, 1, 1, 0], [4, 1]), packer.finish()], 5)
    np.testing.assert_array_equal(blocks.input_ids, [[1, 10, 11, 12, 2], [1, 13, 2, 0, 0], [1, 20, 2, 0, 0]])
    np.testing.assert_array_equal(
        blocks.word_ids, [[-1, 0, 1, 1, -1], [-1, 0, -1, -1, -1], [-1, 0, -1, -1, -1]]
    )
    assert packer.stats.long_documents == 1


# --------------------------------------------------------------------------------------------------
# Order, sharding, resume
# --------------------------------------------------------------------------------------------------


def toy_dataset(n: int, L: int = 8) -> BlockDataset:
    ids = np.tile(np.arange(n, dtype=np.int32)[:, None] + 100, (1, L))
    wids = np.tile(np.arange(L, dtype=np.int32), (n, 1))
    lengths = np.full(n, L, dtype=np.int32)
    lengths[::3] = L // 2
    return BlockDataset(ids, wids, lengths)


def test_order_is_a_pure_function_of_seed_and_epoch():
    # Test vector of order rule "1" (sorted keys): docs/data.md quotes it; the runs recorded under rule "1"
    # resume with it (tests/test_order.py has feistel-6's).
    assert epoch_order(10, 0, 0, "1").tolist() == [5, 2, 0, 9, 8, 6, 1, 7, 4, 3]
    assert epoch_order(10, 0, 1, "1").tolist() == [8, 2, 4, 7, 5, 9, 3, 0, 1, 6]
    assert epoch_order(10, 1, 0, "1").tolist() == [4, 0, 7, 9, 8, 6, 3, 1, 2, 5]
    order = epoch_order(1000, 7, 3)
    assert sorted(order.tolist()) == list(range(1000))
    np.testing.assert_array_equal(order, epoch_order(1000, 7, 3))
    assert not np.array_equal(order, epoch_order(1000, 7, 4))
    assert not np.array_equal(order, epoch_order(1000, 8, 3))


def test_batches_cover_each_epoch_once_and_drop_the_last_incomplete_batch():
    data = toy_dataset(103)
    it = BatchIterator(data, 10, seed=3, epochs=2)
    assert it.steps_per_epoch == 10 and len(it) == 10
    batches = list(it)
    assert [(b["epoch"], b["step"]) for b in batches] == [(e, s) for e in range(2) for s in range(10)]
    for epoch in range(2):
        ids = np.concatenate([b["example_ids"] for b in batches if b["epoch"] == epoch])
        assert len(set(ids.tolist())) == 100
        np.testing.assert_array_equal(ids, epoch_order(103, 3, epoch)[:100])
    b = batches[0]
    assert b["input_ids"].dtype == b["word_ids"].dtype == b["attention_mask"].dtype == np.int32
    assert b["example_ids"].dtype == np.int64 and b["valid"].all()
    np.testing.assert_array_equal(b["input_ids"][:, 0], b["example_ids"] + 100)  # the right rows
    np.testing.assert_array_equal(b["attention_mask"].sum(1), data.lengths[b["example_ids"]])
    assert it.position == DataPosition(2, 0)


@pytest.mark.parametrize(("hosts", "devices"), [(1, 1), (2, 1), (2, 4), (4, 2), (8, 1), (3, 2)])
def test_host_slices_union_is_the_global_batch(hosts, devices):
    data = toy_dataset(150)
    B = 24
    single = list(BatchIterator(data, B, seed=5, epochs=2))
    per_host = [
        list(BatchIterator(data, B, seed=5, host_index=h, host_count=hosts, epochs=2)) for h in range(hosts)
    ]
    for step, full in enumerate(single):
        parts = [per_host[h][step] for h in range(hosts)]
        for key in ("input_ids", "word_ids", "attention_mask", "example_ids"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])
        for h in range(hosts):
            assert parts[h]["example_ids"].shape == (B // hosts,)
            np.testing.assert_array_equal(
                parts[h]["example_ids"], full["example_ids"][host_rows(B, h, hosts)]
            )
            # devices split the host's rows in order; together they tile the global batch
            local = [parts[h]["example_ids"][d * B // (hosts * devices) : (d + 1) * B // (hosts * devices)]
                     for d in range(devices)]  # fmt: skip
            for d in range(devices):
                np.testing.assert_array_equal(
                    local[d], full["example_ids"][device_rows(B, h, hosts, d, devices)]
                )


def test_batch_layout_errors():
    data = toy_dataset(50)
    with pytest.raises(WWMError, match="multiple of hosts"):
        BatchIterator(data, 10, seed=0, host_count=4)
    with pytest.raises(WWMError, match="host_index"):
        BatchIterator(data, 8, seed=0, host_index=2, host_count=2)
    with pytest.raises(WWMError, match="fewer than one global batch"):
        BatchIterator(data, 64, seed=0)


@pytest.mark.parametrize("stop", [0, 3, 7, 10, 14, 25])
def test_resume_from_a_saved_position_continues_identically(stop):
    data = toy_dataset(57)  # 7 steps per epoch with B = 8
    reference = list(BatchIterator(data, 8, seed=11, epochs=4))
    it = BatchIterator(data, 8, seed=11, epochs=4)
    batches = iter(it)
    first = [next(batches) for _ in range(stop)]  # trained on these, then saved a checkpoint
    saved = json.loads(json.dumps(it.position.to_dict()))  # what a checkpoint stores
    if stop:
        assert DataPosition.from_dict(saved) == DataPosition(first[-1]["epoch"], first[-1]["step"] + 1)
    rest = list(BatchIterator(data, 8, seed=11, epochs=4, start=DataPosition.from_dict(saved)))
    resumed = first + rest
    assert len(resumed) == len(reference) == 28
    for a, b in zip(resumed, reference, strict=True):
        assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
        np.testing.assert_array_equal(a["example_ids"], b["example_ids"])
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])


def test_batch_at_a_position_is_the_batch_iteration_yields_there():
    data = toy_dataset(57)
    reference = list(BatchIterator(data, 8, seed=11, epochs=3, host_index=1, host_count=2))
    direct = BatchIterator(data, 8, seed=11, host_index=1, host_count=2)
    for b in reversed(reference):  # any order: epochs and steps jump around
        a = direct.batch_at(DataPosition(b["epoch"], b["step"]))
        for key in ("input_ids", "word_ids", "attention_mask", "example_ids"):
            np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(IndexError):
        direct.batch_at(DataPosition(0, 7))


def test_data_position_validation():
    with pytest.raises(WWMError):
        DataPosition(-1, 0)
    with pytest.raises(WWMError, match="saved data position"):
        DataPosition.from_dict({"epoch": 1})


def test_validation_batches_are_fixed_and_padded(wordpiece_tokenizer):
    data = toy_dataset(21)
    data.pad_token_id = 0
    passes = [list(validation_batches(data, 8, host_index=h, host_count=2)) for h in range(2)]
    assert [len(p) for p in passes] == [3, 3]
    ids = np.concatenate(
        [np.concatenate([passes[0][s]["example_ids"], passes[1][s]["example_ids"]]) for s in range(3)]
    )
    valid = np.concatenate([np.concatenate([passes[0][s]["valid"], passes[1][s]["valid"]]) for s in range(3)])
    np.testing.assert_array_equal(ids[valid], np.arange(21))  # stored order, every example once
    assert valid.sum() == 21 and not valid[21:].any()
    assert all(b["epoch"] == 0 for p in passes for b in p)
    last = passes[1][2]
    assert (last["attention_mask"][~last["valid"]] == 0).all() and (
        last["word_ids"][~last["valid"]] == -1
    ).all()


def test_masked_batches_apply_the_masker_with_the_batch_epoch(wordpiece_tokenizer):
    from wwm.masking import WholeWordMasker

    rng = np.random.default_rng(0)
    V = len(wordpiece_tokenizer)
    n, L = 40, 16
    ids = rng.integers(5, V, size=(n, L)).astype(np.int32)
    ids[:, 0], ids[:, -1] = wordpiece_tokenizer.cls_token_id, wordpiece_tokenizer.sep_token_id
    wids = np.full((n, L), -1, dtype=np.int32)
    wids[:, 1:-1] = np.arange(L - 2) // 2
    data = BlockDataset(ids, wids, np.full(n, L, dtype=np.int32))
    masker = WholeWordMasker.from_tokenizer(wordpiece_tokenizer)
    batches = list(masked_batches(BatchIterator(data, 8, seed=1, epochs=2), masker))
    for b in batches:
        masked = b["labels"] != IGNORE_INDEX
        assert masked.any() and not masked[:, [0, -1]].any()
        np.testing.assert_array_equal(b["labels"][masked], b["original_input_ids"][masked])
        np.testing.assert_array_equal(b["input_ids"][~masked], b["original_input_ids"][~masked])
        expected = masker(b["original_input_ids"], b["word_ids"], b["example_ids"], b["epoch"])
        np.testing.assert_array_equal(b["input_ids"], expected.input_ids)
    # Validation masks are the same at every evaluation.
    first = [b["labels"] for b in masked_batches(validation_batches(data, 8), masker)]
    again = [b["labels"] for b in masked_batches(validation_batches(data, 8), masker)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_validation_split_is_a_deterministic_hash():
    mask = validation_mask(np.arange(20000), 0.1, 0)
    assert abs(mask.mean() - 0.1) < 0.01
    np.testing.assert_array_equal(mask, validation_mask(np.arange(20000), 0.1, 0))
    assert not np.array_equal(mask, validation_mask(np.arange(20000), 0.1, 1))
    assert np.flatnonzero(validation_mask(np.arange(100), 0.1, 0)).tolist() == [
        0,
        17,
        22,
        27,
        50,
        53,
        71,
        79,
        87,
    ]
    # A document's fate depends on its index only, not on how many documents follow.
    np.testing.assert_array_equal(validation_mask(np.arange(500), 0.1, 0), mask[:500])


# --------------------------------------------------------------------------------------------------
# The pipeline on real text
# --------------------------------------------------------------------------------------------------


def test_prepare_blocks_match_the_tokenizer(tmp_path, corpus, wordpiece_dir, wordpiece_tokenizer, paragraphs):
    from wwm.words import tokenize_with_word_ids

    config = make_config(tmp_path, wordpiece_dir, [corpus], packing="doc_per_block", max_seq_len=64)
    prepared = prepare_dataset(config)
    assert not prepared.cache_hit and prepared.validation is None
    blocks = prepared.train.as_blocks()
    stats = prepared.stats.packing["train"]
    assert stats["documents"] == len(paragraphs) and stats["blocks"] == len(blocks)
    assert prepared.stats.source["train"]["empty_skipped"] == 4  # the blank lines
    expected = tokenize_with_word_ids(wordpiece_tokenizer, paragraphs, add_special_tokens=False)
    # doc_per_block: the content of consecutive blocks of one document is the document's tokens.
    got = []
    for i in range(len(blocks)):
        got.append(content_of(blocks, i))
    np.testing.assert_array_equal(
        np.concatenate(got), np.concatenate([np.array(x) for x in expected["input_ids"]])
    )
    assert stats["tokens"] == sum(len(x) for x in expected["input_ids"])
    # word ids per block: -1 exactly on CLS/SEP/PAD, dense words otherwise
    special = np.isin(blocks.input_ids, [wordpiece_tokenizer.cls_token_id, wordpiece_tokenizer.sep_token_id,
                                         wordpiece_tokenizer.pad_token_id])  # fmt: skip
    assert ((blocks.word_ids == -1) == special).all()
    assert blocks.input_ids.dtype == np.int32 and prepared.train.input_ids.dtype == np.uint16
    assert prepared.specials.vocab_size == len(wordpiece_tokenizer)


def test_chinese_builtin_with_jieba_words(tmp_path, wordpiece_dir, wordpiece_tokenizer):
    pytest.importorskip("jieba")
    from wwm.data.builtin import builtin_documents
    from wwm.words import tokenize_with_word_ids

    config = RunConfig(
        data=DataConfig(
            source="builtin",
            builtin_lang="zh",
            packing="doc_per_block",
            max_seq_len=256,
            cache_dir=str(tmp_path / "cache"),
        ),
        tokenizer=TokenizerConfig(path=str(wordpiece_dir), word_policy="cjk"),
        output_dir=str(tmp_path / "out"),
    )
    blocks = prepare_dataset(config).train.as_blocks()
    docs = builtin_documents("zh")
    expected = tokenize_with_word_ids(wordpiece_tokenizer, docs, policy="cjk", add_special_tokens=False)
    assert len(blocks) == len(docs)  # every line fits one block
    for i, wids in enumerate(expected["word_ids"]):
        np.testing.assert_array_equal(content_of(blocks, i), expected["input_ids"][i])
        np.testing.assert_array_equal(blocks.word_ids[i, 1 : blocks.lengths[i] - 1], wids)
    # jieba groups characters: some words hold several tokens (BERT alone would give one per character)
    sizes = np.unique(blocks.word_ids[0][blocks.word_ids[0] >= 0], return_counts=True)[1]
    assert sizes.max() >= 2


def test_cache_is_reused_and_invalidated(tmp_path, corpus, wordpiece_dir, bpe_dir):
    config = make_config(tmp_path, wordpiece_dir, [corpus], validation_fraction=0.1)
    first = prepare_dataset(config)
    again = prepare_dataset(config)
    assert not first.cache_hit and again.cache_hit and again.cache_path == first.cache_path
    np.testing.assert_array_equal(np.asarray(again.train.input_ids), np.asarray(first.train.input_ids))
    assert again.stats.packing == first.stats.packing
    # Settings that change the blocks change the key; num_proc and streaming-irrelevant knobs do not.
    changes = {
        "max_seq_len": dataclasses.replace(config, data=dataclasses.replace(config.data, max_seq_len=48)),
        "packing": dataclasses.replace(
            config, data=dataclasses.replace(config.data, packing="doc_per_block")
        ),
        "validation": dataclasses.replace(
            config, data=dataclasses.replace(config.data, validation_fraction=0.2)
        ),
        "split_seed": dataclasses.replace(config, data=dataclasses.replace(config.data, split_seed=1)),
        "policy": dataclasses.replace(
            config, tokenizer=TokenizerConfig(path=str(wordpiece_dir), word_policy="whitespace")
        ),
        "tokenizer": dataclasses.replace(config, tokenizer=TokenizerConfig(path=str(bpe_dir))),
    }
    paths = {first.cache_path}
    for name, changed in changes.items():
        result = prepare_dataset(changed)
        assert not result.cache_hit, name
        paths.add(result.cache_path)
    assert len(paths) == len(changes) + 1
    same = dataclasses.replace(config, data=dataclasses.replace(config.data, num_proc=2, map_batch_size=7))
    assert prepare_dataset(same).cache_hit
    # Editing the corpus invalidates it (size / modification time are in the key).
    with open(corpus, "a", encoding="utf-8") as f:
        f.write("one more document at the end of the corpus\n")
    edited = prepare_dataset(config)
    assert not edited.cache_hit and edited.cache_path != first.cache_path
    assert edited.stats.packing["train"]["tokens"] + edited.stats.packing["validation"]["tokens"] > (
        first.stats.packing["train"]["tokens"] + first.stats.packing["validation"]["tokens"]
    )
    assert prepare_dataset(config, rebuild=True).cache_hit is False


def test_num_proc_gives_the_same_blocks(tmp_path, corpus, wordpiece_dir):
    one = prepare_dataset(make_config(tmp_path / "a", wordpiece_dir, [corpus], map_batch_size=16))
    two = prepare_dataset(make_config(tmp_path / "b", wordpiece_dir, [corpus], map_batch_size=16, num_proc=2))
    for name in ("input_ids", "word_ids", "lengths"):
        np.testing.assert_array_equal(
            np.asarray(getattr(one.train, name)), np.asarray(getattr(two.train, name))
        )


@pytest.mark.parametrize(
    ("packing", "policy", "tokenizer"),
    [("full_sentences", "tokenizer", "wordpiece"), ("doc_per_block", "whitespace", "bpe")],
)
def test_streaming_gives_the_same_blocks(
    tmp_path, corpus, wordpiece_dir, bpe_dir, packing, policy, tokenizer
):
    tok = wordpiece_dir if tokenizer == "wordpiece" else bpe_dir
    config = make_config(tmp_path, tok, [corpus], packing=packing, validation_fraction=0.1, word_policy=policy,
                         map_batch_size=25)  # fmt: skip
    stored = prepare_dataset(config)
    streamed = prepare_dataset(
        dataclasses.replace(config, data=dataclasses.replace(config.data, streaming=True))
    )
    assert streamed.cache_path is None
    for split in ("train", "validation"):
        a = getattr(stored, split).as_blocks()
        chunks = list(getattr(streamed, split).iter_chunks())
        assert [first for _, first in chunks] == list(np.cumsum([0] + [len(c) for c, _ in chunks])[:-1])
        b = Blocks.concat([c for c, _ in chunks], config.data.max_seq_len)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
        assert getattr(streamed, split).stats["packing"] == stored.stats.packing[split]


def test_streaming_batches_are_deterministic_and_cover_the_epoch(tmp_path, corpus, wordpiece_dir):
    config = make_config(tmp_path, wordpiece_dir, [corpus], streaming=True, shuffle_buffer=16)
    prepared = prepare_dataset(config)
    n = sum(len(c) for c, _ in prepared.train.iter_chunks())
    B = 4
    runs = [list(prepared.train_batches(B, epochs=2)) for _ in range(2)]
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a["example_ids"], b["example_ids"])
    for epoch in range(2):
        ids = np.concatenate([b["example_ids"] for b in runs[0] if b["epoch"] == epoch])
        assert ids.size == (n // B) * B and len(set(ids.tolist())) == ids.size
        assert not np.array_equal(ids, np.arange(ids.size))  # shuffled
    e0 = [b["example_ids"] for b in runs[0] if b["epoch"] == 0]
    e1 = [b["example_ids"] for b in runs[0] if b["epoch"] == 1]
    assert not all(np.array_equal(x, y) for x, y in zip(e0, e1, strict=False))
    # two hosts read the stream and keep their halves
    halves = [list(prepared.train_batches(B, epochs=1, host_index=h, host_count=2)) for h in range(2)]
    full = [b for b in runs[0] if b["epoch"] == 0]
    for s, batch in enumerate(full):
        np.testing.assert_array_equal(
            np.concatenate([halves[0][s]["input_ids"], halves[1][s]["input_ids"]]), batch["input_ids"]
        )
    # resume mid-epoch
    rest = list(prepared.train_batches(B, epochs=2, start=DataPosition(0, 3)))
    for a, b in zip(rest, runs[0][3:], strict=True):
        np.testing.assert_array_equal(a["example_ids"], b["example_ids"])


def test_validation_files_and_summary(tmp_path, corpus, wordpiece_dir, paragraphs, capsys):
    from wwm_cli import main

    val = tmp_path / "val.txt"
    val.write_text("\n".join(paragraphs[:5]) + "\n", encoding="utf-8")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"output_dir: out\ndata:\n  source: files\n  train_files: [{corpus.name}]\n  validation_files: [val.txt]\n"
        f"  max_seq_len: 32\n  cache_dir: cache\ntokenizer:\n  path: {wordpiece_dir}\n",
        encoding="utf-8",
    )
    assert main(["prepare", "--config", str(cfg), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "cache            miss" in out and "validation" in out and "words per token" in out
    assert main(["prepare", "--config", str(cfg), "--no-progress", "data.max_seq_len=32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cache_hit"] is True
    assert summary["packing"]["validation"]["documents"] == 5
    assert summary["source"]["validation"]["documents_read"] == 5


def test_builtin_source_with_a_trained_tokenizer(tmp_path):
    config = RunConfig(
        data=DataConfig(
            source="builtin",
            max_documents=150,
            max_seq_len=48,
            validation_fraction=0.1,
            cache_dir=str(tmp_path / "cache"),
        ),
        tokenizer=TokenizerConfig(train=TokenizerTrainConfig(kind="wordpiece", vocab_size=600)),
        output_dir=str(tmp_path / "run"),
    )
    prepared = prepare_dataset(config)
    assert prepared.tokenizer_path == str(tmp_path / "run" / "tokenizer")
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").is_file()
    assert prepared.stats.source["train"]["documents_read"] == 150
    packing = prepared.stats.packing
    assert packing["train"]["documents"] + packing["validation"]["documents"] == 150
    assert 5 <= packing["validation"]["documents"] <= 30
    again = prepare_dataset(config)  # the saved tokenizer is reused, so the cache hits
    assert again.cache_hit
    other = dataclasses.replace(config, tokenizer=TokenizerConfig(train=TokenizerTrainConfig(vocab_size=700)))
    with pytest.raises(WWMError, match="trained with other settings"):
        prepare_dataset(other)


def test_builtin_corpus_is_big_enough_and_stable():
    from wwm.data.builtin import builtin_documents, builtin_fingerprint

    docs = builtin_documents("en")
    size = sum(len(d.encode()) for d in docs)
    assert 1_000_000 <= size <= 3_000_000 and len(docs) > 3000
    assert all(d.strip() for d in docs)
    assert builtin_fingerprint("en") == builtin_fingerprint("en")
    assert builtin_fingerprint("en")["python"].count(".") == 2
    zh = builtin_documents("zh")
    assert zh and any("\u4e00" <= c <= "\u9fff" for c in zh[0])


def test_jsonl_parquet_folder_glob_and_blank_line_sources(tmp_path, paragraphs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.jsonl").write_text(
        "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate([*paragraphs[:3], "", None])) + "\n",
        encoding="utf-8",
    )
    pq.write_table(pa.table({"body": paragraphs[3:6]}), folder / "b.parquet")
    (folder / "c.txt").write_text("first doc line one\nline two\n\n\n  \nsecond doc\n", encoding="utf-8")
    data = DataConfig(source="files", train_files=(str(folder / "a.jsonl"),))
    stats = SourceStats()
    assert list(iter_documents(data, "train", stats)) == paragraphs[:3]
    assert stats.empty_skipped == 2
    data = DataConfig(source="files", train_files=(str(folder / "*.parquet"),), text_column="body")
    assert list(iter_documents(data, "train")) == paragraphs[3:6]
    data = DataConfig(source="files", train_files=(str(folder / "c.txt"),), document_separator="blank_line")
    assert list(iter_documents(data, "train")) == ["first doc line one\nline two", "second doc"]
    # a folder: every file, in sorted order (jsonl has no 'body' column -> a clear error)
    data = DataConfig(source="files", train_files=(str(folder),), text_column="body")
    with pytest.raises(WWMError, match=r"has no column 'body'.*set data\.text_column"):
        list(iter_documents(data, "train"))


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_missing_path(tmp_path, wordpiece_dir):
    config = make_config(tmp_path, wordpiece_dir, [tmp_path / "nope.txt"])
    with pytest.raises(WWMError, match=r"nope\.txt' does not exist"):
        prepare_dataset(config)
    config = make_config(tmp_path, wordpiece_dir, [tmp_path / "*.missing"])
    with pytest.raises(WWMError, match="matches no file"):
        prepare_dataset(config)
    folder = tmp_path / "corpus"
    folder.mkdir()
    with pytest.raises(WWMError, match="holds no file"):
        prepare_dataset(make_config(tmp_path, wordpiece_dir, [folder]))
    (folder / "a.txt").write_text("some text\n", encoding="utf-8")
    config = make_config(tmp_path, tmp_path / "no-tokenizer", [folder])
    with pytest.raises(WWMError, match=r"tokenizer\.path .* does not exist"):
        prepare_dataset(config)


def test_empty_files_and_lines(tmp_path, corpus, wordpiece_dir):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n", encoding="utf-8")
    with pytest.raises(WWMError, match="gave no document"):
        prepare_dataset(make_config(tmp_path, wordpiece_dir, [empty]))
    with pytest.raises(WWMError, match=r"gave no document.*3 empty lines skipped"):
        prepare_dataset(make_config(tmp_path, wordpiece_dir, [blank, empty]))
    prepared = prepare_dataset(make_config(tmp_path, wordpiece_dir, [empty, corpus, blank]))
    source = prepared.stats.source["train"]
    assert source["empty_files"] == 2 and source["empty_skipped"] == 4 + 3 and source["files"] == 3


def test_latin1_input_is_refused_in_one_line_unless_its_encoding_or_replace_is_set(
    tmp_path, wordpiece_dir, capsys
):
    """Issue 21: a Latin-1 file read as UTF-8 lost every accented letter to U+FFFD without a word. Now the
    first undecodable byte stops `wwm prepare` in one line naming the file, the byte and its line, before
    any tokenizing; data.encoding reads it right, on_decode_error: replace keeps the old behaviour, counted."""
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"plain text line\n" * 3 + "le café est très bon à Noël\r\n".encode("latin-1") * 20)
    config = make_config(tmp_path, wordpiece_dir, [path])
    with pytest.raises(
        WWMError, match=r"latin1.txt' is not valid utf-8 text: byte\(s\) e9 at byte offset 54 \(line 4\)"
    ):
        prepare_dataset(config)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{source: files, train_files: [{path}], max_seq_len: 32, cache_dir: {tmp_path / 'c'}}}\n"
                   f"tokenizer: {{path: {wordpiece_dir}}}\n")  # fmt: skip
    from wwm_cli import main

    assert main(["prepare", "--config", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.encoding" in err and "on_decode_error: replace" in err
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("meta.json"))
    latin1 = DataConfig(source="files", train_files=(str(path),), encoding="latin-1")
    assert list(iter_documents(latin1))[3] == "le café est très bon à Noël"
    stats = SourceStats()
    replace = DataConfig(source="files", train_files=(str(path),), on_decode_error="replace")
    assert (
        list(iter_documents(replace, "train", stats))[3] == "le caf\ufffd est tr\ufffds bon \ufffd No\ufffdl"
    )
    assert stats.replaced == 80
    prepared = prepare_dataset(
        dataclasses.replace(config, data=dataclasses.replace(config.data, on_decode_error="replace"))
    )
    assert prepared.stats.source["train"]["replaced"] == 80
    from wwm.data.pipeline import format_summary

    assert "80 undecodable byte sequences replaced" in format_summary(prepared)
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "caf\xe9 ok"}\n{"text": "fine"}\n')
    with pytest.raises(WWMError, match=r"bad.jsonl' is not valid utf-8 text: byte\(s\) e9"):
        list(iter_documents(DataConfig(source="files", train_files=(str(jsonl),))))
    stats = SourceStats()
    replace = DataConfig(source="files", train_files=(str(jsonl),), on_decode_error="replace")
    assert list(iter_documents(replace, "train", stats)) == ["caf\ufffd ok", "fine"] and stats.replaced == 1
    latin1 = DataConfig(source="files", train_files=(str(jsonl),), encoding="latin-1")
    assert list(iter_documents(latin1)) == ["café ok", "fine"]


def test_document_longer_than_a_block_is_split_not_dropped(tmp_path, wordpiece_dir, wordpiece_tokenizer):
    path = tmp_path / "long.txt"
    long_doc = " ".join(["the documentation of the language"] * 40)
    path.write_text(long_doc + "\nshort one\n", encoding="utf-8")
    prepared = prepare_dataset(
        make_config(tmp_path, wordpiece_dir, [path], packing="doc_per_block", max_seq_len=16)
    )
    stats = prepared.stats.packing["train"]
    n_tokens = len(wordpiece_tokenizer(long_doc, add_special_tokens=False)["input_ids"])
    assert stats["long_documents"] == 1
    assert stats["blocks"] == -(-n_tokens // 14) + 1
    assert stats["tokens"] == n_tokens + len(
        wordpiece_tokenizer("short one", add_special_tokens=False)["input_ids"]
    )


def test_corpus_without_any_token(tmp_path, wordpiece_dir):
    path = tmp_path / "control.txt"
    path.write_text("\x01\x02\n\x03\n", encoding="utf-8")  # BERT's normalizer drops control characters
    with pytest.raises(WWMError, match="gave no block"):
        prepare_dataset(make_config(tmp_path, wordpiece_dir, [path]))


def test_validation_fraction_too_small_for_the_corpus(tmp_path, wordpiece_dir):
    path = tmp_path / "two.txt"
    path.write_text("a first document\na second document\n", encoding="utf-8")
    with pytest.raises(WWMError, match="validation split is empty"):
        prepare_dataset(make_config(tmp_path, wordpiece_dir, [path], validation_fraction=0.01))


def test_tokenizer_without_mlm_special_tokens(tmp_path, corpus):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        ["some text to learn from"] * 5,
        trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[UNK]", "[PAD]"]),
    )
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    with pytest.raises(
        WWMError, match=r"lacks cls_token \(or bos_token\), sep_token \(or eos_token\), mask_token"
    ):
        prepare_dataset(make_config(tmp_path, path, [corpus]))


def test_train_tokenizer_command(tmp_path, corpus, capsys):
    from transformers import AutoTokenizer

    from wwm_cli import main

    out = tmp_path / "tok"
    assert (
        main(
            [
                "train-tokenizer",
                "--corpus",
                str(corpus),
                "--kind",
                "bpe",
                "--vocab-size",
                "400",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "saved to" in capsys.readouterr().out
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.is_fast and len(tok) == 400
    assert SpecialIds.from_tokenizer(tok) == SpecialIds(cls=0, sep=2, pad=1, mask=4, vocab_size=400)
    assert main(["train-tokenizer", "--corpus", str(corpus), "--out", str(out)]) == 2  # refuses to overwrite
    assert "not empty" in capsys.readouterr().err


def test_wwm_data_imports_numpy_only():
    import subprocess
    import sys

    code = (
        "import sys, wwm.data, wwm.config, wwm_cli.commands.prepare, wwm_cli.commands.train_tokenizer\n"
        "heavy = [m for m in ('datasets', 'transformers', 'tokenizers', 'pyarrow', 'torch', 'jax') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})  # fmt: skip
    assert result.stdout.strip() == ""


# --------------------------------------------------------------------------------------------------
# Checks before the slow work; long documents; not-text files; Hub names offline
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def built_splits(monkeypatch):
    """The splits that `prepare` tokenizes, in order (recorded, then built as usual)."""
    from wwm.data import pipeline

    calls: list[str] = []
    original = pipeline._build_split

    def recording(config, split, *args, **kwargs):
        calls.append(split)
        return original(config, split, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_build_split", recording)
    return calls


def test_an_empty_validation_split_fails_before_tokenizing_the_training_split(
    tmp_path, corpus, wordpiece_dir, built_splits
):
    # No document is held out by the fraction: nothing is tokenized at all.
    with pytest.raises(
        WWMError, match=r"validation split is empty \(data.validation_fraction 1e-06 held out none"
    ):
        prepare_dataset(make_config(tmp_path, wordpiece_dir, [corpus], validation_fraction=1e-6))
    assert built_splits == []
    # Validation files without a document: the same.
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(WWMError, match=r"validation split is empty .*hold no document"):
        prepare_dataset(make_config(tmp_path, wordpiece_dir, [corpus], validation_files=(str(blank),)))
    assert built_splits == []
    # Validation documents that give no token: found on the (small) validation split, before the train split.
    control = tmp_path / "control.txt"
    control.write_text("\x01\x02\n", encoding="utf-8")
    with pytest.raises(WWMError, match=r"validation split is empty .*have no token"):
        prepare_dataset(make_config(tmp_path, wordpiece_dir, [corpus], validation_files=(str(control),)))
    assert built_splits == ["validation"]


def test_an_empty_validation_split_fails_before_training_a_tokenizer(tmp_path, corpus, monkeypatch):
    import wwm.tokenizer_train

    def never(*args, **kwargs):
        raise AssertionError("the tokenizer was trained before the splits were checked")

    monkeypatch.setattr(wwm.tokenizer_train, "train_tokenizer", never)
    config = RunConfig(
        data=DataConfig(source="files", train_files=(str(corpus),), validation_fraction=1e-6,
                        cache_dir=str(tmp_path / "cache")),
        tokenizer=TokenizerConfig(train=TokenizerTrainConfig(vocab_size=500)),
        output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    with pytest.raises(WWMError, match="validation split is empty"):
        prepare_dataset(config)


def test_streaming_checks_the_validation_split_first(tmp_path, corpus, wordpiece_dir, monkeypatch):
    from wwm.data import pipeline

    passes: list[str] = []
    original = pipeline.StreamingBlocks.iter_chunks

    def recording(self):
        passes.append(self.split)
        return original(self)

    monkeypatch.setattr(pipeline.StreamingBlocks, "iter_chunks", recording)
    config = make_config(tmp_path, wordpiece_dir, [corpus], validation_fraction=1e-6, streaming=True)
    with pytest.raises(WWMError, match="validation split is empty"):
        pipeline.measure_stream(prepare_dataset(config))
    assert passes == ["validation"]


def test_text_pieces_cut_where_a_run_of_whitespace_starts_with_a_space():
    from wwm.data.pieces import text_pieces

    text = "alpha beta  gamma\tdelta \n epsilon " * 40 + "x" * 300 + " tail"
    pieces = text_pieces(text, 64)
    assert "".join(pieces) == text and len(pieces) > 1
    assert all(len(p) <= 64 for p in pieces)
    spaces = " \t\n\r"
    for before, after in itertools.pairwise(pieces):
        if after[0] != "x" and before[-1] != "x":  # a cut within the 300 x's has no space to use
            assert after[0] == " " and before[-1] not in spaces, (before, after)
    assert text_pieces("short", 64) == ["short"]
    assert text_pieces("y" * 130, 64) == ["y" * 64, "y" * 64, "yy"]


@pytest.mark.parametrize(
    ("tokenizer_name", "policy"),
    [("wordpiece_tokenizer", "tokenizer"), ("wordpiece_tokenizer", "vocab"), ("bpe_tokenizer", "tokenizer"),
     ("bpe_tokenizer", "whitespace"), ("unigram_tokenizer", "tokenizer")],
)  # fmt: skip
def test_long_documents_tokenized_in_pieces_give_the_same_blocks(
    request, monkeypatch, paragraphs, tokenizer_name, policy
):
    import pyarrow as pa

    from wwm.data import tokenizer as tok_module
    from wwm.data.tokenizer import flat_columns, tokenize_table

    tokenizer = request.getfixturevalue(tokenizer_name)
    docs = [" ".join(paragraphs[:12]), "a  b\t\tc \n d" * 30, paragraphs[20], " ".join(paragraphs[30:40])]
    table = pa.table({"text": docs})
    specials = SpecialIds.from_tokenizer(tokenizer)

    def blocks(max_piece: int, call_chars: int) -> Blocks:
        monkeypatch.setattr(tok_module, "MAX_PIECE_CHARS", max_piece)
        monkeypatch.setattr(tok_module, "_CALL_CHARS", call_chars)
        packer = Packer(32, "full_sentences", specials)
        out = packer.add(*flat_columns(tokenize_table(table, tokenizer, policy)))
        return Blocks.concat([out, packer.finish()], 32), packer.stats

    whole, whole_stats = blocks(1 << 30, 1 << 30)
    cut, cut_stats = blocks(50, 120)
    assert cut_stats == whole_stats and whole_stats.documents == len(docs)
    for name in ("input_ids", "word_ids", "lengths"):
        np.testing.assert_array_equal(getattr(cut, name), getattr(whole, name))


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_tokenizer_training_on_long_documents_in_pieces_learns_the_same_tokenizer(
    kind, training_texts, monkeypatch
):
    from wwm.data import pieces as tok_module
    from wwm.tokenizer_train import train_tokenizer

    texts = [" ".join(training_texts[i : i + 40]) for i in range(0, 400, 40)]  # ten long documents
    whole = train_tokenizer(texts, kind, 800).backend_tokenizer.to_str()
    pieces: list[int] = []
    original = tok_module.text_pieces

    def recording(text, limit):
        out = original(text, limit)
        pieces.extend(map(len, out))
        return out

    monkeypatch.setattr(tok_module, "MAX_PIECE_CHARS", 300)
    monkeypatch.setattr(tok_module, "text_pieces", recording)
    assert train_tokenizer(texts, kind, 800).backend_tokenizer.to_str() == whole
    assert len(pieces) > 10 * len(texts) and max(pieces) <= 300  # the trainer got pieces


def test_a_2mb_line_is_tokenized_in_bounded_pieces(tmp_path, wordpiece_dir, paragraphs, monkeypatch):
    import wwm.words
    from wwm.data.tokenizer import _CALL_CHARS, MAX_PIECE_CHARS

    calls: list[list[int]] = []
    original = wwm.words.tokenize_with_word_ids

    def recording(tokenizer, texts, **kwargs):
        calls.append([len(t) for t in texts])
        return original(tokenizer, texts, **kwargs)

    monkeypatch.setattr(wwm.words, "tokenize_with_word_ids", recording)
    text = " ".join(paragraphs)
    line = (text + " ") * (2_000_000 // len(text) + 1)
    path = tmp_path / "one-line.txt"
    path.write_text(line[:2_000_000], encoding="utf-8")  # no newline at all
    stats = prepare_dataset(make_config(tmp_path, wordpiece_dir, [path], max_seq_len=128)).stats.packing[
        "train"
    ]
    assert stats["documents"] == 1 and stats["long_documents"] == 1
    assert stats["blocks"] == -(-stats["tokens"] // 126) and stats["tokens"] > 300_000
    assert sum(map(sum, calls)) == 2_000_000
    assert max(max(c) for c in calls) <= MAX_PIECE_CHARS and max(map(sum, calls)) <= _CALL_CHARS


def test_a_binary_file_is_refused_before_any_work(tmp_path, corpus, wordpiece_dir, built_splits):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(np.random.default_rng(0).bytes(200_000))
    with pytest.raises(WWMError, match=r"weights.bin' is not valid utf-8 text: byte"):
        prepare_dataset(make_config(tmp_path, wordpiece_dir, [corpus, binary]))
    assert built_splits == []
    # With on_decode_error: replace, a file that is mostly invalid is still refused (it is not text).
    with pytest.raises(
        WWMError, match=r"weights.bin' is not utf-8 text: \d+% of its first [\d,]+ characters"
    ):
        prepare_dataset(make_config(tmp_path, wordpiece_dir, [corpus, binary], on_decode_error="replace"))
    assert built_splits == []
    utf16 = tmp_path / "notepad.txt"
    utf16.write_text("some text saved by an old editor\n" * 20, encoding="utf-16")
    with pytest.raises(
        WWMError, match=r"is not valid utf-8 text \(it looks like UTF-16: data.encoding: utf-16\)"
    ):
        list(iter_documents(DataConfig(source="files", train_files=(str(utf16),))))
    with pytest.raises(WWMError, match=r"is not utf-8 text \(it looks like UTF-16\)"):
        list(iter_documents(DataConfig(source="files", train_files=(str(utf16),), on_decode_error="replace")))
    utf16_config = DataConfig(source="files", train_files=(str(utf16),), encoding="utf-16")
    assert next(iter(iter_documents(utf16_config))) == "some text saved by an old editor"


def test_a_hub_name_offline_fails_fast_in_one_line(monkeypatch):
    import time

    from wwm.data.tokenizer import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(
        WWMError, match=r"not in the local Hugging Face cache and HF_HUB_OFFLINE is set; .*hf download"
    ):
        load_tokenizer("wwm-tests/no-such-tokenizer")
    assert time.perf_counter() - start < 10  # the Hub download retried for ~50 s


def test_a_hub_name_without_network_asks_the_hub_once(monkeypatch):
    import transformers

    from wwm.data import tokenizer as tok_module

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    probes, loads = [], []

    def unreachable(name):
        probes.append(name)
        raise ConnectionError("[Errno -2] Name or service not known")

    original = transformers.AutoTokenizer.from_pretrained

    def recording(name, **kwargs):
        loads.append(kwargs.get("local_files_only"))
        if not kwargs.get("local_files_only"):
            raise AssertionError("a download was tried although the Hub did not answer")
        return original(name, **kwargs)

    monkeypatch.setattr(tok_module, "_probe_hub", unreachable)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", recording)
    with pytest.raises(
        WWMError, match=r"the Hub cannot be reached \(ConnectionError: .*\); download it once"
    ):
        tok_module.load_tokenizer("wwm-tests/no-such-tokenizer")
    assert probes == ["wwm-tests/no-such-tokenizer"] and loads == [True]
