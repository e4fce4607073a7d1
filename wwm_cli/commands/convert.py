"""`wwm convert`: Hugging Face BERT/RoBERTa checkpoints <-> our Flax parameter directories.

Nothing heavy is imported at module level (the CLI imports every command module to build --help);
jax/flax load inside `main`.
"""

from __future__ import annotations

import argparse

HELP = "convert checkpoints: Hugging Face safetensors dir <-> wwm Flax params dir (lossless)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="direction", metavar="DIRECTION")
    sub.required = True
    to_flax = sub.add_parser(
        "hf-to-flax",
        help="HF dir (config.json + model.safetensors) -> Flax dir (config.json + params.safetensors)",
    )
    to_flax.add_argument("--src", required=True, help="Hugging Face model directory")
    to_flax.add_argument("--out", required=True, help="output directory for the Flax params")
    to_flax.add_argument(
        "--seed", type=int, default=0, help="seed for a fresh MLM head when the checkpoint has none"
    )
    to_hf = sub.add_parser(
        "flax-to-hf", help="Flax dir -> HF dir that transformers' AutoModelForMaskedLM loads"
    )
    to_hf.add_argument(
        "--src", required=True, help="Flax params directory (written by hf-to-flax or training)"
    )
    to_hf.add_argument("--out", required=True, help="output Hugging Face directory")
    to_hf.add_argument(
        "--tokenizer", default=None, help="directory whose tokenizer files are copied to --out"
    )
    for p in (to_flax, to_hf):
        p.add_argument("--force", action="store_true",
                       help="write into a non-empty --out (replacing the files of the same name)")  # fmt: skip


def check_out(src: str, out: str, force: bool) -> None:
    """Refuse, before any loading, to write into a non-empty --out without --force (or over --src).
    --src, --out and --tokenizer may be bucket URLs (wwm.fs)."""
    import os

    from wwm import fs
    from wwm.errors import WWMError

    same = (fs.normalize(out) == fs.normalize(src) if fs.is_remote(out) or fs.is_remote(src)
            else os.path.exists(out) and os.path.realpath(out) == os.path.realpath(src))  # fmt: skip
    if same:
        raise WWMError(f"--out {out!r} is the --src folder; write the conversion to another folder")
    if fs.isfile(out):
        raise WWMError(f"--out {out!r} is a file; give a folder")
    if fs.listdir(out) and not force:
        raise WWMError(
            f"--out {out!r} exists and is not empty; choose a new folder, or pass --force to write into it "
            "(files of the same name are replaced)"
        )
    if fs.is_remote(out):
        fs.check_writable_folder(out, "--out")


def main(args: argparse.Namespace) -> int:
    import contextlib
    import tempfile

    from wwm import fs

    check_out(args.src, args.out, args.force)

    from wwm_jax import convert
    from wwm_jax.modeling import num_params

    src = fs.fetch(args.src)  # a bucket's folder: a local copy
    with contextlib.ExitStack() as stack:
        out = (
            stack.enter_context(tempfile.TemporaryDirectory(prefix="wwm-convert-"))
            if fs.is_remote(args.out)
            else args.out
        )
        if args.direction == "hf-to-flax":
            model, info = convert.load_hf_with_info(src, seed=args.seed)
            written = convert.save_flax(model, out)
            notes = " (fresh MLM head)" if info.fresh_head else ""
            if info.ignored_keys:
                notes += f" (ignored {len(info.ignored_keys)} unused keys: {', '.join(info.ignored_keys)})"
        else:
            model = convert.load_flax(src)
            tokenizer = fs.fetch(args.tokenizer) if args.tokenizer else None
            written = convert.save_hf(model, out, tokenizer_dir=tokenizer)
            notes = f" ({model.config.checkpoint_dtype})"
        if fs.is_remote(args.out):
            fs.upload_tree(out, args.out, last=("config.json",))  # readers look for config.json first
    print(
        f"{args.direction}: {model.config.architecture}, {num_params(model):,} parameters{notes}; "
        f"wrote {', '.join(written)}"
    )
    return 0
