"""`wwm fill-mask` (and `wwm eval` on every model family): the two frameworks give the same numbers;
--mask-words masks every token of a word; a text without a mask is refused."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_models import FAMILIES, TOKENIZER, write_model

from wwm_cli.main import main


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request, tmp_path_factory):
    tokenizer = request.getfixturevalue(TOKENIZER[request.param])
    directory = write_model(str(tmp_path_factory.mktemp(request.param)), request.param, tokenizer)
    return request.param, directory, tokenizer


def _fill(capsys, *argv) -> tuple[int, dict]:
    capsys.readouterr()
    status = main(["fill-mask", *argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_fill_mask_agrees_across_frameworks(family_model, capsys):
    _, directory, tokenizer = family_model
    m = tokenizer.mask_token
    texts = [f"the {m} of the function is returned.", f"use a {m} to {m} the values."]
    status, out = _fill(capsys, "--model", directory, "--framework", "both", "--top-k", "4", *texts)
    assert status == 0
    assert out["max_abs_score_diff"] < 1e-6
    assert [len(t["masks"]) for t in out["texts"]] == [1, 2]
    for text in out["texts"]:
        for mask in text["masks"]:
            assert [c["id"] for c in mask["jax"]][:1] == [c["id"] for c in mask["torch"]][:1]
            scores = [c["score"] for c in mask["jax"]]
            assert len(scores) == 4 and scores == sorted(scores, reverse=True)
            assert mask["original"] is None


def test_fill_mask_one_framework_gives_the_same_numbers(family_model, capsys):
    _, directory, tokenizer = family_model
    text = f"a {tokenizer.mask_token} list."
    runs = {fw: _fill(capsys, "--model", directory, "--framework", fw, text)[1] for fw in ("jax", "torch")}
    jax_top, torch_top = (
        runs["jax"]["texts"][0]["masks"][0]["jax"],
        runs["torch"]["texts"][0]["masks"][0]["torch"],
    )
    assert np.allclose([c["score"] for c in jax_top], [c["score"] for c in torch_top], atol=1e-6)


def test_mask_words_masks_every_token_of_the_word(wordpiece_tokenizer):
    from wwm_cli.evaluate import mask_text

    word = next(w for w in ("unbelievably", "interoperability", "xylophones")
                if len(wordpiece_tokenizer.tokenize(w)) >= 3)  # fmt: skip
    pieces = wordpiece_tokenizer.tokenize(word)
    item = mask_text(wordpiece_tokenizer, f"the {word} of a {word.upper()}.", (word,), 64)
    mask = wordpiece_tokenizer.mask_token_id
    assert len(item.positions) == 2 * len(pieces)  # both occurrences (case-folded), every token
    assert item.originals == pieces + pieces
    assert all(item.input_ids[p] == mask for p in item.positions)
    assert int((item.input_ids == mask).sum()) == len(item.positions)


def test_fill_mask_refuses_a_text_without_mask(family_model, capsys):
    _, directory, _ = family_model
    capsys.readouterr()
    assert main(["fill-mask", "--model", directory, "no mask here"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mask-words" in err[0]


@pytest.mark.slow  # prepares the data with each family's tokenizer
def test_eval_both_on_every_family(family_model, tmp_path, capsys):
    from wwm.data.builtin import builtin_sample_text

    family, directory, _ = family_model
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(builtin_sample_text("en")[:200]) + "\n")
    config = tmp_path / "data.yaml"
    config.write_text(
        f"data: {{source: files, train_files: [{corpus}], max_seq_len: 32, validation_fraction: 0.2, "
        f"cache_dir: {tmp_path / 'cache'}}}\ntrain: {{global_batch_size: 8}}\nlogging: {{progress_bar: false}}\n"
    )
    capsys.readouterr()
    status = main(["eval", "--model", directory, "--config", str(config), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert status == 0, (family, out)
    assert out["rel_loss_diff"] <= 1e-5
    assert out["jax"]["accuracy"] == out["torch"]["accuracy"]


def test_a_long_text_truncates_in_wwm_fill_mask_and_in_pipelines_given_truncation(
    tmp_path, wordpiece_tokenizer, capsys
):
    """docs/run_directories.md, "Exports" (issue 21): the export's model_max_length is the model's positions,
    but transformers' fill-mask pipeline tokenizes without truncation (and a fast tokenizer drops any stored
    in tokenizer.json for such a call), so a long text needs tokenizer_kwargs={"truncation": True};
    `wwm fill-mask` truncates by itself. This test fails when transformers starts truncating (the docs
    must then say so)."""
    from transformers import pipeline

    from wwm_jax.train import save_tokenizer

    directory = write_model(str(tmp_path / "bert"), "bert", wordpiece_tokenizer)  # 512 positions
    save_tokenizer(wordpiece_tokenizer, directory, 512)  # as the trainers' export writes it
    text = "the [MASK] of the function is returned. " + "the value of the function is returned. " * 80
    fill = pipeline("fill-mask", model=directory)
    with pytest.raises(Exception):  # noqa: B017 (whatever transformers raises for positions it lacks)
        fill(text)
    assert len(fill(text, tokenizer_kwargs={"truncation": True})) == 5
    status, out = _fill(capsys, "--model", directory, "--framework", "torch", text)
    assert status == 0 and len(out["texts"][0]["masks"]) == 1
