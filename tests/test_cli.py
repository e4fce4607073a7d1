"""The console script: `wwm inspect` and the benchmark's report format (tiny sizes)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from wwm.cli import main


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
            [sys.executable, "-m", "wwm.cli", "inspect", *args], capture_output=True, text=True
        )
        assert result.returncode == 2
        assert message in result.stderr and "Traceback" not in result.stderr


def test_help_lists_commands():
    result = subprocess.run([sys.executable, "-m", "wwm.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("inspect", "bench"):
        assert command in result.stdout


@pytest.mark.slow
def test_bench_masking_runs_on_tiny_shapes_and_reports_every_implementation():
    from wwm.bench import masking

    report = masking.run(repeats=1, shapes=((4, 64),))
    impls = {r["impl"] for r in report["results"]}
    assert {"wwm", "hf_wwm_np", "hf_wwm_pt", "hf_token_np"} <= impls
    assert all(np.isfinite(r["tokens_per_s"]) and r["tokens_per_s"] > 0 for r in report["results"])
    assert "x hf_wwm_np" in masking.format_table(report)
