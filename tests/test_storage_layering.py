"""Every path a user gives goes through the storage layer (wwm.fs); a module that opens a file directly
says why that file is local.

The rule (docs/scale.md, "What opens files"): outside ``wwm/fs``, a call of the built-in ``open`` or of
``Path.read_text / write_text / read_bytes / write_bytes`` carries a ``# local: <why>`` comment on one of its
lines (or the line above), naming why no bucket URL can reach it: wwm's own run folder or a bucket run's
staging folder, a local copy the storage layer made, the data cache, /proc, a benchmark's temporary folder.
A new direct open without one fails this test, so each one is classified when it is written.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("wwm", "wwm_jax", "wwm_torch", "wwm_cli")
EXEMPT = ("wwm/fs/",)  # the storage layer itself
PATH_METHODS = {"read_text", "write_text", "read_bytes", "write_bytes"}
MARK = "# local:"


def _comments(source: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string
    return out


def _is_direct_open(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id == "open"
    if isinstance(func, ast.Attribute):
        if func.attr == "open" and isinstance(func.value, ast.Name) and func.value.id == "io":
            return True
        if func.attr in PATH_METHODS:
            # wwm.fs.read_text(...) / fs.write_bytes(...) are the storage layer's own functions
            value = func.value
            return not (isinstance(value, ast.Name) and value.id == "fs") and not (
                isinstance(value, ast.Attribute) and value.attr == "fs"
            )
    return False


def unmarked_opens(source: str, name: str = "<source>") -> list[str]:
    """`name:line` of every direct open in `source` without a `# local:` reason."""
    comments = _comments(source)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and _is_direct_open(node):
            lines = range(node.lineno - 1, (node.end_lineno or node.lineno) + 1)
            if not any(MARK in comments.get(i, "") for i in lines):
                found.append(f"{name}:{node.lineno}")
    return sorted(found, key=lambda x: int(x.rsplit(":", 1)[1]))


def _modules() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith(EXEMPT):
                files.append(path)
    return files


def test_every_direct_open_outside_the_storage_layer_says_why_its_path_is_local():
    found = []
    for path in _modules():
        found += unmarked_opens(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert not found, (
        "direct file opens outside wwm.fs without a '# local: <why>' reason (route a user path through "
        "wwm.fs, or say why the path is local): " + ", ".join(found)
    )


def test_the_check_finds_an_unmarked_open_and_accepts_a_marked_one():
    # negative control: the scanner is not blind
    bad = "import json\nwith open(user_path) as f:\n    x = json.load(f)\nPath(p).write_text('x')\n"
    assert unmarked_opens(bad) == ["<source>:2", "<source>:4"]
    good = (
        "with open(p) as f:  # local: the run's staging folder\n    pass\n"
        "# local: /proc\ntext = Path('/proc/x').read_text()\n"
        "data = fs.read_bytes(url)\nwwm.fs.write_text(url, 'x')\n"
    )
    assert unmarked_opens(good) == []
    assert len(_modules()) > 50  # the packages were found


# ---- user paths that used to be opened directly, now read through the storage layer --------------------


def test_bucket_config_file_reads_and_resolves_relative_paths_against_its_bucket_folder(s3_bucket):
    from wwm import fs
    from wwm.config import load_config

    url = f"{s3_bucket}/configs/run.yaml"
    fs.write_text(url, "data:\n  train_files: [corpus/a.txt]\noutput_dir: runs/one\n")
    config = load_config(url, ["train.max_steps=3"])
    assert list(config.data.train_files) == [f"{s3_bucket}/configs/corpus/a.txt"]
    assert config.output_dir == f"{s3_bucket}/configs/runs/one"
    assert config.train.max_steps == 3


def test_bucket_config_file_missing_is_one_line(s3_bucket):
    import pytest

    from wwm.config import load_config
    from wwm.errors import WWMError

    with pytest.raises(WWMError) as err:
        load_config(f"{s3_bucket}/configs/none.yaml")
    assert "\n" not in str(err.value) and "none.yaml" in str(err.value) and "does not exist" in str(err.value)


def test_bucket_inspect_and_bench_corpus_read_a_bucket_file(s3_bucket, capsys):
    import json

    from wwm import fs
    from wwm_cli.bench.data import _lang_documents
    from wwm_cli.main import main

    url = f"{s3_bucket}/text/doc.txt"
    fs.write_text(url, "the quick brown fox jumps\n\nover the lazy dog\n")
    assert main(["inspect", url, "--examples", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    assert _lang_documents("en", url, 0, 0) == ["the quick brown fox jumps", "over the lazy dog"]


def test_bucket_parity_refuses_a_bucket_report_folder_in_one_line(s3_bucket, capsys):
    from wwm_cli.main import main

    assert main(["parity", "--config", "configs/parity-tiny.yaml", "--out", f"{s3_bucket}/parity"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "give a local path" in err, err
