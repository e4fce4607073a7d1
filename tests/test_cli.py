"""The console script: `wwm inspect`, the benchmark's report format (tiny sizes), overrides anywhere,
one-line warnings, `wwm parity --compare`'s wording."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from wwm_cli import main, parse_args


def test_inspect_on_the_builtin_sample_prints_statistics_and_whole_words(capsys):
    assert main(["inspect", "--examples", "1", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["masked_words_fully_masked"] == 1.0
    assert abs(stats["masked_share_of_tokens"] - 0.15) < 0.01
    assert abs(stats["mask_token_share"] - 0.8) < 0.05
    assert stats["documents"] > 100


def test_inspect_chinese_sample_uses_jieba_words(capsys):
    assert main(["inspect", "--lang", "zh", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["policy"] == "segmenter"  # the new name of policy 'cjk'; jieba for Han without kana
    # jieba groups characters: fewer words than eligible tokens (each character is a token).
    assert stats["words"] < 0.8 * stats["eligible_tokens"]
    assert stats["masked_words_fully_masked"] == 1.0


def test_inspect_text_output_marks_masked_words_without_colour(tmp_path, capsys):
    path = tmp_path / "doc.txt"
    path.write_text("the quick brown fox jumps over the lazy dog\n" * 20, encoding="utf-8")
    assert main(["inspect", str(path), "--examples", "2", "--mask-prob", "0.3", "--color", "never"]) == 0
    out = capsys.readouterr().out
    assert "⟦" in out and "masked_words_fully_masked" in out and "\x1b[" not in out


def test_inspect_reports_bad_input_as_one_line(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    for args, message in (
        ([str(tmp_path / "missing.txt")], "no such file"),
        ([str(empty)], "holds no text"),
        (["--mask-prob", "1.5"], "mask_prob"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "wwm_cli", "inspect", *args], capture_output=True, text=True
        )
        assert result.returncode == 2
        assert message in result.stderr and "Traceback" not in result.stderr


def test_help_lists_commands():
    result = subprocess.run([sys.executable, "-m", "wwm_cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("inspect", "bench", "prepare", "cache"):
        assert command in result.stdout


@pytest.mark.slow
def test_bench_masking_runs_on_tiny_shapes_and_reports_every_implementation():
    from wwm_cli.bench import masking

    report = masking.run(repeats=1, shapes=((4, 64),))
    impls = {r["impl"] for r in report["results"]}
    assert {"wwm", "hf_wwm_np", "hf_wwm_pt", "hf_token_np"} <= impls
    assert all(np.isfinite(r["tokens_per_s"]) and r["tokens_per_s"] > 0 for r in report["results"])
    assert "x hf_wwm_np" in masking.format_table(report)


@pytest.mark.parametrize(
    ("argv", "overrides"),
    [
        (["prepare", "--config", "c.yaml", "--no-progress", "data.max_seq_len=64"], ["data.max_seq_len=64"]),
        (["prepare", "a=1", "--config", "c.yaml", "--json", "b=2", "--rebuild", "c=[1, 2]"], ["a=1", "b=2", "c=[1, 2]"]),
        (["train", "--config", "c.yaml", "--framework", "jax", "train.max_steps=3"], ["train.max_steps=3"]),
        (["parity", "--config", "c.yaml", "--json", "seed=1", "--steps", "2", "output_dir=/tmp/x"],
         ["seed=1", "output_dir=/tmp/x"]),
    ],
)  # fmt: skip
def test_overrides_may_follow_other_flags(argv, overrides):
    assert parse_args(argv).overrides == overrides


@pytest.mark.parametrize(
    "argv",
    [["prepare", "--config", "c.yaml", "--bogus"], ["prepare", "--config", "c.yaml", "--json", "a=1", "--bogus"],
     ["convert", "hf-to-flax", "--src", "a", "--out", "b", "x=1"]],
)  # fmt: skip
def test_unknown_arguments_are_still_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_prepare_applies_an_override_placed_after_a_flag(tmp_path, capsys, training_texts):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(training_texts[:50]) + "\n", encoding="utf-8")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'out'}\ndata:\n  source: files\n  train_files: [{corpus}]\n"
        f"  cache_dir: {tmp_path / 'cache'}\ntokenizer:\n  train: {{kind: wordpiece, vocab_size: 300}}\n"
    )
    argv = ["prepare", "--config", str(config), "--no-progress", "--json", "data.max_documents=7"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["source"]["train"]["documents_read"] == 7


def test_train_tokenizer_warns_in_one_line_when_the_vocabulary_falls_short(tmp_path, capsys):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("a few words of text\nand a few more words\n", encoding="utf-8")
    argv = [
        "train-tokenizer",
        "--corpus",
        str(corpus),
        "--vocab-size",
        "2000",
        "--out",
        str(tmp_path / "tok"),
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("wwm train-tokenizer: warning: the wordpiece tokenizer has ")
    assert "not the 2,000 asked for" in err[0] and "min_frequency=2" in err[0]


def test_train_tokenizer_warning_is_a_wwm_warning(training_texts):
    from wwm.errors import WWMWarning
    from wwm.tokenizer_train import train_tokenizer

    for kind in ("wordpiece", "bpe", "unigram"):
        with pytest.warns(
            WWMWarning, match=rf"the {kind} tokenizer has [\d,]+ tokens, not the 5,000 asked for"
        ):
            train_tokenizer(training_texts[:20], kind, 5000)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", WWMWarning)  # enough text: no warning
        assert len(train_tokenizer(training_texts, "wordpiece", 1000)) == 1000


def test_parity_compare_says_masks_were_not_compared(tmp_path, capsys):
    for name, losses in (("a", [7.0, 6.5]), ("b", [7.0, 6.5])):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "metrics.jsonl", "w") as f:
            for step, loss in enumerate(losses, start=1):
                f.write(json.dumps({"step": step, "loss": loss, "learning_rate": 1e-3, "grad_norm": 1.0,
                                    "masked_tokens": 10}) + "\n")  # fmt: skip
    out = tmp_path / "report"
    assert main(["parity", "--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "masked batches: not compared" in text and "None" not in text
    markdown = (out / "report.md").read_text()
    assert "not compared" in markdown and "None" not in markdown
