"""metrics.jsonl truncation on resume: both trainers share it."""

from __future__ import annotations

import json

from wwm.metrics_schema import truncate_after


def test_truncate_keeps_steps_up_to_the_checkpoint_and_drops_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)] + [{"step": 3, "eval_loss": 0.5}]
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"step": 6, "lo'  # killed mid-write
    path.write_text(text, encoding="utf-8")
    truncate_after(str(path), 3)
    kept = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in kept] == [1, 2, 3, 3]
    truncate_after(str(tmp_path / "missing.jsonl"), 3)  # no file: nothing to do
