"""packed_documents (issue 13): the packer equals a naive oracle of the written rule (docs/data.md), the
stored blocks and batches carry segment and position ids, other packings are unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wwm.config import DataConfig, RunConfig, TokenizerConfig
from wwm.data import BatchIterator, BlockDataset, Packer, SpecialIds, prepare_dataset
from wwm.data.loader import validation_batches
from wwm.data.packing import model_position_ids, piece_positions

SPECIALS = SpecialIds(cls=101, sep=102, pad=0, mask=103, vocab_size=1000)


def naive_packed(
    docs: list[tuple[list[int], list[int]]], L: int, sp: SpecialIds = SPECIALS, window: int = 64
):
    """The rule of docs/data.md, token by token: pieces of at most L - 2 tokens, each framed CLS .. SEP,
    placed best-fit among `window` open blocks of L (the least room that holds the piece, the oldest among
    equals; none: a new block, after closing the one with least room if `window` are open); blocks in
    closing order, the open ones at the end in opening order; word ids 0..W-1 per block (a piece's first
    token starts a word); segment ids 1..k per block; positions restart at each CLS."""
    C = L - 2
    pieces = []
    for ids, wids in docs:
        for s in range(0, len(ids), C):
            pieces.append((ids[s : s + C], wids[s : s + C]))

    def room(block):
        return L - sum(len(p[0]) + 2 for p in block["pieces"])

    blocks: list[list] = []  # closed, in closing order
    open_blocks: list[dict] = []  # in opening order
    for piece in pieces:
        size = len(piece[0]) + 2
        fits = [b for b in open_blocks if room(b) >= size]
        if fits:
            best = min(fits, key=lambda b: (room(b), b["opened"]))
        else:
            if len(open_blocks) == window:
                full = min(open_blocks, key=lambda b: (room(b), b["opened"]))
                open_blocks.remove(full)
                blocks.append(full["pieces"])
            best = {"opened": len(blocks) + len(open_blocks), "pieces": []}
            open_blocks.append(best)
        best["pieces"].append(piece)
    blocks += [b["pieces"] for b in open_blocks]
    out = []
    for block in blocks:
        ids, words, segs, pos = [], [], [], []
        word = -1
        for number, (pids, pwids) in enumerate(block, start=1):
            ids.append(sp.cls)
            words.append(-1)
            prev = None
            for t, (tok, w) in enumerate(zip(pids, pwids, strict=True)):
                ids.append(tok)
                if w < 0:
                    words.append(-1)
                else:
                    if t == 0 or w != prev or prev is None:
                        word += 1
                    words.append(word)
                prev = w if w >= 0 else None
            ids.append(sp.sep)
            words.append(-1)
            segs += [number] * (len(pids) + 2)
            pos += list(range(len(pids) + 2))
        n = len(ids)
        pad = L - n
        out.append((ids + [sp.pad] * pad, words + [-1] * pad, n, segs + [0] * pad, pos + [0] * pad))
    return out


def pack(docs, L, chunk=None, window=64):
    packer = Packer(L, "packed_documents", SPECIALS, window=window)
    chunk = chunk or len(docs) or 1
    parts = []
    for i in range(0, max(len(docs), 1), chunk):
        part = docs[i : i + chunk]
        ids = np.array([t for d in part for t in d[0]], dtype=np.int32)
        wids = np.array([w for d in part for w in d[1]], dtype=np.int32)
        lengths = np.array([len(d[0]) for d in part], dtype=np.int64)
        parts.append(packer.add(ids, wids, lengths))
    parts.append(packer.finish())
    from wwm.data import Blocks

    return Blocks.concat(parts, L), packer.stats


def random_docs(draw_lengths, seed):
    rng = np.random.default_rng(seed)
    docs = []
    for n in draw_lengths:
        ids = rng.integers(200, 900, n).tolist()
        # word ids local to the document, -1 for an occasional special token in the text
        starts = rng.random(n) < 0.7
        wids = (np.cumsum(starts) - 1).tolist()
        wids = [w if rng.random() > 0.05 else -1 for w in wids]
        docs.append((ids, wids))
    return docs


def check_equal(blocks, expected):
    assert len(blocks) == len(expected)
    for i, (ids, words, n, segs, pos) in enumerate(expected):
        np.testing.assert_array_equal(blocks.input_ids[i], ids)
        np.testing.assert_array_equal(blocks.word_ids[i], words)
        assert blocks.lengths[i] == n
        np.testing.assert_array_equal(blocks.segment_ids[i], segs)
        np.testing.assert_array_equal(piece_positions(blocks.segment_ids[i : i + 1])[0], pos)


@settings(max_examples=120, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=0, max_size=25),
    L=st.integers(3, 24),
    chunk=st.integers(1, 7),
    seed=st.integers(0, 2**16),
    window=st.sampled_from([1, 2, 3, 64]),  # 1 is next-fit; 2, 3 close blocks early (the window is full)
)
def test_packed_documents_equals_naive_oracle(lengths, L, chunk, seed, window):
    docs = random_docs(lengths, seed)
    blocks, stats = pack(docs, L, chunk, window)
    expected = naive_packed([d for d in docs if d[0]], L, window=window)
    check_equal(blocks, expected)
    assert stats.pieces == sum(max(s) if max(s) else 0 for *_, s, _ in expected)
    assert stats.padding == sum(L - e[2] for e in expected)
    assert stats.long_documents == sum(len(d[0]) > L - 2 for d in docs)


def test_packed_documents_best_fit_example():
    """docs/data.md's best-fit example: L = 8, documents `a b`, `c c c c`, `d`. `d` (3 framed tokens) goes
    back into the first block (room 4), not the second (room 2): 2 blocks where next-fit makes 3."""
    a, c, d = 11, 13, 14
    docs = [([a, a], [0, 1]), ([c] * 4, [0, 0, 1, 1]), ([d], [0])]
    blocks, stats = pack(docs, 8)
    cls, sep, pad = SPECIALS.cls, SPECIALS.sep, SPECIALS.pad
    np.testing.assert_array_equal(
        blocks.input_ids, [[cls, a, a, sep, cls, d, sep, pad], [cls, c, c, c, c, sep, pad, pad]]
    )
    np.testing.assert_array_equal(
        blocks.word_ids, [[-1, 0, 1, -1, -1, 2, -1, -1], [-1, 0, 0, 1, 1, -1, -1, -1]]
    )
    np.testing.assert_array_equal(blocks.segment_ids, [[1, 1, 1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 1, 1, 0, 0]])
    assert (stats.blocks, stats.padding) == (2, 3)
    next_fit, _ = pack(docs, 8, window=1)
    assert len(next_fit) == 3


def test_packed_documents_window_is_full_closes_the_fullest_block():
    """With 2 blocks open, a piece that fits neither closes the one with least room (oldest among equals),
    and blocks come out in closing order."""
    # L = 10: sizes 7 (room 3), 9 (room 1), 6 -> closes the room-1 block (opened second) first.
    docs = [([1] * 5, [0] * 5), ([2] * 7, [0] * 7), ([3] * 4, [0] * 4), ([4], [0])]
    blocks, _ = pack(docs, 10, window=2)
    firsts = [int(b[1]) for b in blocks.input_ids]
    assert firsts == [2, 1, 3]  # the `2` block closed first; `4` (3 tokens) fit the `1` block's room 3
    assert list(blocks.input_ids[1][:10]) == [101, 1, 1, 1, 1, 1, 102, 101, 4, 102]


def test_packed_documents_example():
    """The example of docs/data.md: L = 8, documents `a b b` (words 0 1 1), `c`, `d e e e e e e` (7)."""
    a, b, c, d, e = 11, 12, 13, 14, 15
    docs = [([a, b, b], [0, 1, 1]), ([c], [0]), ([d] + [e] * 6, [0, 1, 1, 1, 2, 2, 2])]
    blocks, stats = pack(docs, 8)
    cls, sep, pad = SPECIALS.cls, SPECIALS.sep, SPECIALS.pad
    np.testing.assert_array_equal(
        blocks.input_ids,
        [
            [cls, a, b, b, sep, cls, c, sep],
            [cls, d, e, e, e, e, e, sep],
            [cls, e, sep, pad, pad, pad, pad, pad],
        ],
    )
    np.testing.assert_array_equal(
        blocks.word_ids,
        [[-1, 0, 1, 1, -1, -1, 2, -1], [-1, 0, 1, 1, 1, 2, 2, -1], [-1, 0, -1, -1, -1, -1, -1, -1]],
    )
    np.testing.assert_array_equal(
        blocks.segment_ids, [[1, 1, 1, 1, 1, 2, 2, 2], [1] * 8, [1, 1, 1, 0, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(piece_positions(blocks.segment_ids)[0], [0, 1, 2, 3, 4, 0, 1, 2])
    assert stats.pieces == 4 and stats.padding == 5 and stats.long_documents == 1


def test_packed_documents_model_position_ids():
    seg = np.array([[1, 1, 1, 2, 2, 0]])
    pos = piece_positions(seg)
    np.testing.assert_array_equal(pos, [[0, 1, 2, 0, 1, 0]])
    np.testing.assert_array_equal(model_position_ids(pos, seg, "bert", 0), pos)
    np.testing.assert_array_equal(model_position_ids(pos, seg, "roberta", 1), [[2, 3, 4, 2, 3, 1]])


def _config(tmp_path, tokenizer_dir, corpus, packing, streaming=False, validation=0.0):
    return RunConfig(
        data=DataConfig(
            source="files",
            train_files=(str(corpus),),
            max_seq_len=32,
            packing=packing,
            cache_dir=str(tmp_path / "cache"),
            streaming=streaming,
            validation_fraction=validation,
        ),
        tokenizer=TokenizerConfig(path=str(tokenizer_dir)),
        output_dir=str(tmp_path / "out"),
    )


@pytest.fixture(scope="module")
def packed_env(tmp_path_factory, wordpiece_tokenizer, training_texts):
    root = tmp_path_factory.mktemp("packed")
    wordpiece_tokenizer.save_pretrained(str(root / "tok"))
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join([p for p in training_texts if p.isascii()][:120]) + "\n", encoding="utf-8")
    return root, root / "tok", corpus


def test_packed_documents_stored_and_batched(packed_env, tmp_path):
    """Prepared blocks hold the segment ids (a segment_ids.bin), batches carry segment and position ids,
    the streamed blocks equal the stored ones, and padding falls well below doc_per_block's."""
    _, tok, corpus = packed_env
    prepared = prepare_dataset(_config(tmp_path, tok, corpus, "packed_documents", validation=0.1))
    train = prepared.train
    assert train.segment_ids is not None and (tmp_path / "cache").exists()
    assert (np.asarray(train.segment_ids) > 0).sum(1).tolist() == np.asarray(train.lengths).tolist()
    batch = next(iter(BatchIterator(train, 4, seed=0)))
    assert set(batch) >= {"segment_ids", "position_ids"}
    np.testing.assert_array_equal(batch["position_ids"], piece_positions(batch["segment_ids"]))
    np.testing.assert_array_equal(batch["attention_mask"], batch["segment_ids"] > 0)
    # a padded validation batch: filler rows have segment 0
    val = list(validation_batches(prepared.validation, 64))
    assert all(b["segment_ids"].shape == b["input_ids"].shape for b in val)
    assert (val[-1]["segment_ids"][~val[-1]["valid"]] == 0).all()
    stream = prepare_dataset(
        _config(tmp_path, tok, corpus, "packed_documents", streaming=True, validation=0.1)
    )
    streamed = [b for b in stream.train]
    np.testing.assert_array_equal(np.concatenate([b.segment_ids for b in streamed]), train.segment_ids)
    np.testing.assert_array_equal(np.concatenate([b.input_ids for b in streamed]), train.input_ids)
    sb = next(iter(BatchIterator(stream.train, 4, seed=0, shuffle=False)))
    np.testing.assert_array_equal(sb["segment_ids"], np.asarray(train.segment_ids[:4]))
    per_block = prepare_dataset(_config(tmp_path, tok, corpus, "doc_per_block"))
    assert per_block.train.segment_ids is None
    assert "segment_ids" not in per_block.train.batch(np.arange(2))
    share = prepared.stats.packing["train"]["padding"] / (len(train) * 32)
    share_doc = per_block.stats.packing["train"]["padding"] / (len(per_block.train) * 32)
    assert share < share_doc  # at L = 32 most paragraphs fill blocks; the bench measures L = 512
    from wwm.data import format_summary

    assert "pieces per block" in format_summary(prepared)
    assert "pieces per block" not in format_summary(per_block)


def test_packed_documents_leaves_other_packings_unchanged(packed_env, tmp_path):
    """The stored files of full_sentences / doc_per_block are exactly three arrays, as before."""
    _, tok, corpus = packed_env
    for packing in ("full_sentences", "doc_per_block"):
        prepared = prepare_dataset(_config(tmp_path, tok, corpus, packing))
        names = sorted(p.name for p in (tmp_path / "cache").glob("data/*/segments/*/train/*.bin"))
        assert names and "piece_starts.bin" not in names
        split = Path(prepared.cache_path) / "segments" / "train-000000" / "train"
        assert isinstance(BlockDataset.open(split), BlockDataset)


def test_packed_documents_cache_key_carries_its_rule(packed_env, tmp_path):
    """Blocks packed by the earlier rule (next-fit) are never reused: packed_documents' cache inputs name
    the rule, so its key differs from one built without it; the other packings' keys are as before."""
    from transformers import AutoTokenizer

    from wwm.data.cache import cache_inputs, cache_key
    from wwm.data.packing import PACKING_RULE

    _, tok, corpus = packed_env
    tokenizer = AutoTokenizer.from_pretrained(str(tok))
    packed = cache_inputs(_config(tmp_path, tok, corpus, "packed_documents"), tokenizer)
    assert packed["packing_rule"] == PACKING_RULE["packed_documents"] != "1"
    older = {k: v for k, v in packed.items() if k != "packing_rule"}
    assert cache_key(packed) != cache_key(older)
    for packing in ("full_sentences", "doc_per_block"):
        assert "packing_rule" not in cache_inputs(_config(tmp_path, tok, corpus, packing), tokenizer)
