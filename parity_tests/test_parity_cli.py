"""`wwm parity`: the command runs both trainers, prints the promised JSON, writes the report and the plot,
and exits non-zero when a tolerance is exceeded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "parity-tiny.yaml")
KEYS = {"steps", "masks_identical", "max_abs_loss_diff", "max_rel_loss_diff", "passed"}


@pytest.mark.slow
def test_wwm_parity_json_report_and_plot(tmp_path):
    out = tmp_path / "report"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "wwm_cli", "parity", "--config", CONFIG, "--steps", "6", "--json",
         "--out", str(out), f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout is the JSON alone
    assert set(result) == KEYS
    assert result["steps"] == 6 and result["masks_identical"] is True and result["passed"] is True
    assert 0 <= result["max_rel_loss_diff"] <= 1e-4 and 0 <= result["max_abs_loss_diff"] < 1e-3
    for name in ("losses.png", "losses.csv", "report.md", "report.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "losses.csv").read_text().strip().splitlines()) == 7  # header + 6 steps
    assert "Verdict: PASSED" in (out / "report.md").read_text()


def _metrics(folder, losses):
    folder.mkdir()
    with open(folder / "metrics.jsonl", "w") as f:
        for step, loss in enumerate(losses, start=1):
            f.write(json.dumps({"step": step, "loss": loss, "learning_rate": 1e-3 * step, "grad_norm": 1.0,
                                "masked_tokens": 10}) + "\n")  # fmt: skip


def test_compare_two_finished_runs_exits_1_past_the_tolerance(tmp_path, capsys):
    from wwm_cli import main

    _metrics(tmp_path / "a", [7.0, 6.5, 6.0])
    _metrics(tmp_path / "b", [7.0, 6.5, 6.0 * (1 + 1e-6)])
    _metrics(tmp_path / "c", [7.0, 6.5, 6.01])
    out = str(tmp_path / "report")
    assert (
        main(["parity", "--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", "--out", out]) == 0
    )
    ok = json.loads(capsys.readouterr().out)
    assert ok["passed"] is True and ok["steps"] == 3 and ok["masks_identical"] is None
    assert (
        main(["parity", "--compare", str(tmp_path / "a"), str(tmp_path / "c"), "--json", "--out", out]) == 1
    )
    bad = json.loads(capsys.readouterr().out)
    assert bad["passed"] is False and bad["max_abs_loss_diff"] == pytest.approx(0.01)
    assert os.path.isfile(os.path.join(out, "losses.png"))


def test_without_config_or_compare_is_a_usage_error(capsys):
    from wwm_cli import main

    assert main(["parity"]) == 2
    assert "--config FILE is required" in capsys.readouterr().err
