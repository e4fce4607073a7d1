"""Storage format 2 (wwm.data.storage): 2 bytes + 1 bit a token (+ 1 bit with packed documents), and
blocks that read back exactly as written, also where the compact rules do not hold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wwm.config import load_config
from wwm.data import BlockDataset, Blocks, Packer, SpecialIds, prepare_dataset
from wwm.data.storage import BlockWriter, split_bytes
from wwm.errors import WWMError

SPECIALS = SpecialIds(cls=2, sep=3, pad=0, mask=4, vocab_size=300)


def _blocks(packing: str, L: int, seed: int, specials: SpecialIds = SPECIALS):
    """Blocks packed from random documents whose text holds literal special tokens (word id -1)."""
    rng = np.random.default_rng(seed)
    packer = Packer(L, packing, specials)
    parts = []
    for _ in range(3):
        lengths = rng.integers(0, 3 * L, 40)
        ids = rng.integers(5, specials.vocab_size, int(lengths.sum()))
        ids[rng.random(ids.size) < 0.03] = rng.choice(specials.all)  # "[SEP]", "[PAD]" ... in the text
        words = np.concatenate([np.cumsum((np.arange(n) == 0) | (rng.random(n) < 0.6)) - 1 for n in lengths])
        words = words.astype(np.int32)
        words[np.isin(ids, specials.all)] = -1
        parts.append(packer.add(ids, words, lengths))
    parts.append(packer.finish())
    return Blocks.concat([p for p in parts if len(p)], L)


def _write(folder, blocks, L, **kwargs):
    writer = BlockWriter(folder, L, 300, segments=blocks.segment_ids is not None, **kwargs)
    for start in range(0, len(blocks), 7):  # several chunks
        writer.write(type(blocks)(*(None if a is None else a[start : start + 7] for a in blocks)))
    writer.close()
    return json.loads((folder / "meta.json").read_text())


@pytest.mark.parametrize("packing", ["full_sentences", "doc_per_block", "packed_documents"])
@pytest.mark.parametrize(
    ("case", "writer_args"),
    [
        ("compact", {"pad_token_id": 0, "non_word_ids": SPECIALS.all}),
        ("special ids unknown to the writer", {"pad_token_id": 0, "non_word_ids": ()}),
        ("a non-word id that is a word", {"pad_token_id": 0, "non_word_ids": (*SPECIALS.all, 7, 8)}),
        ("lengths not readable off the ids", {"pad_token_id": 3, "non_word_ids": SPECIALS.all}),
    ],
)
def test_stored_blocks_read_back_exactly(tmp_path, packing, case, writer_args):
    L = 24
    blocks = _blocks(packing, L, seed=len(case))
    meta = _write(tmp_path / "split", blocks, L, **writer_args)
    stored = BlockDataset.open(tmp_path / "split")
    memory = BlockDataset.from_blocks(blocks)
    rows = np.random.default_rng(1).permutation(len(blocks))[:50]
    rows = np.concatenate([rows, rows[:5]])  # repeated and unsorted ids
    a, b = stored.batch(rows), memory.batch(rows)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    whole = stored.as_blocks()
    for name in ("input_ids", "word_ids", "lengths", "segment_ids"):
        if getattr(blocks, name) is not None:
            np.testing.assert_array_equal(getattr(whole, name), getattr(blocks, name), err_msg=name)
    if case == "compact":  # the files the compact rules need, and no more
        assert meta["lengths"] == "derived" and meta["word_exceptions"] == 0
        names = {p.name for p in (tmp_path / "split").iterdir()}
        extra = {"piece_starts.bin"} if packing == "packed_documents" else set()
        assert names == {"meta.json", "input_ids.bin", "word_starts.bin"} | extra
        per_token = split_bytes(tmp_path / "split") / (len(blocks) * L)
        assert per_token == 2 + 1 / 8 + (1 / 8 if packing == "packed_documents" else 0)
    elif case == "lengths not readable off the ids":
        assert meta["lengths"] == "stored"
    else:
        assert meta["word_exceptions"] > 0


def test_storage_refuses_word_or_segment_ids_it_cannot_store(tmp_path):
    blocks = _blocks("packed_documents", 16, seed=0)
    words = blocks.word_ids.copy()
    words[words == 1] = 5  # not 0, 1, 2, ... in order
    with pytest.raises(ValueError, match="word ids"):
        BlockWriter(tmp_path / "a", 16, 300, segments=True).write(Blocks(blocks[0], words, *blocks[2:]))
    segments = blocks.segment_ids.copy()
    segments[segments == 2] = 1  # two pieces under one number
    with pytest.raises(ValueError, match="segment ids"):
        BlockWriter(tmp_path / "b", 16, 300, segments=True).write(Blocks(*blocks[:3], segments))


def test_an_old_storage_format_is_named_in_one_line(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"format": 1, "num_examples": 3, "max_seq_len": 8}))
    with pytest.raises(WWMError) as err:
        BlockDataset.open(folder)
    assert "storage format 1" in str(err.value) and "--rebuild" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("packing", "tokenizer"),
    [("full_sentences", "wordpiece_tokenizer"), ("packed_documents", "bpe_tokenizer")],
)
def test_prepared_blocks_cost_at_most_2_25_bytes_a_token(
    tmp_path, training_texts, request, packing, tokenizer
):
    """A real tokenizer's blocks: lengths read off the ids, no word exception, <= 2.25 bytes a token."""
    request.getfixturevalue(tokenizer).save_pretrained(str(tmp_path / "tok"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(t for t in training_texts[:200] if t.isascii()) + "\n", encoding="utf-8")
    config = load_config(
        None,
        [f"data.cache_dir={tmp_path / 'cache'}", "data.source=files", f"data.train_files=[{corpus}]",
         f"tokenizer.path={tmp_path / 'tok'}", "data.max_seq_len=64", f"data.packing={packing}"],
    )  # fmt: skip
    train = prepare_dataset(config).train
    meta = json.loads(
        (tmp_path / "cache" / "data").glob("*/segments/*/train/meta.json").__next__().read_text()
    )
    assert meta["lengths"] == "derived" and meta["word_exceptions"] == 0
    assert train.disk_bytes() / (len(train) * 64) <= 2.25


def test_split_folders_read_as_one_dataset(tmp_path):
    """The segments of a split, read as one: part p's row r is example sum(counts[:p]) + r; a part is
    opened when a batch needs it, and at most OPEN_PARTS stay open."""
    from wwm.data import storage

    L = 16
    parts = [_blocks("packed_documents", L, seed=s) for s in range(5)]
    parts.insert(2, Blocks.empty(L, segments=True))  # a segment without blocks
    folders = []
    for p, blocks in enumerate(parts):
        _write(tmp_path / str(p), blocks, L, pad_token_id=0, non_word_ids=SPECIALS.all)
        folders.append(tmp_path / str(p))
    whole = Blocks.concat([b for b in parts if len(b)], L)
    dataset = BlockDataset.open_parts(folders, [len(b) for b in parts], L, segments=True, pad_token_id=0)
    memory = BlockDataset.from_blocks(whole)
    assert len(dataset) == len(whole) and dataset.has_segments and dataset.disk_bytes() > 0
    ids = np.random.default_rng(0).permutation(len(whole))
    for chunk in (ids[:64], ids[64:65], ids[:0], np.arange(len(whole))):
        a, b = dataset.batch(chunk), memory.batch(chunk)
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    storage._Parts.OPEN_PARTS = 2
    try:
        again = BlockDataset.open_parts(folders, [len(b) for b in parts], L, segments=True, pad_token_id=0)
        np.testing.assert_array_equal(again.batch(ids)["input_ids"], memory.batch(ids)["input_ids"])
        assert len(again._source._open) <= 2
    finally:
        storage._Parts.OPEN_PARTS = 256
    wrong = BlockDataset.open_parts(folders, [len(b) + 1 for b in parts], L, segments=True, pad_token_id=0)
    with pytest.raises(WWMError, match="manifest"):
        wrong.batch(np.arange(3))
