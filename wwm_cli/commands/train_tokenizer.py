"""`wwm train-tokenizer --corpus PATH|builtin --kind K --vocab-size N --out DIR`."""

from __future__ import annotations

import argparse

from wwm.tokenizer_train import ALL_KINDS, WORD_STRUCTURED_KINDS

#: Languages written without spaces between words (and Vietnamese, between syllables): --pre-segment.
SEGMENTED_LANGS = ("zh", "ja", "th", "lo", "km", "my", "bo", "vi")
#: The file beside a tokenizer trained pre-segmented: {"segmenter": NAME}.
PRE_SEGMENT_FILE = "wwm_pre_segment.json"

HELP = (
    "Train a WordPiece / byte-level BPE / Unigram / ModernBERT-style tokenizer with the special tokens "
    "MLM needs."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--corpus",
        required=True,
        nargs="+",
        metavar="PATH",
        help="text/jsonl/parquet files, folders or globs, or 'builtin' (Python's docs; --lang zh, ja, th: "
        "the Chinese, Japanese or Thai sample)",
    )
    p.add_argument(
        "--kind",
        choices=ALL_KINDS,
        default="wordpiece",
        help="wordpiece (BERT), bpe (RoBERTa), unigram (SentencePiece), modernbert (ModernBERT's byte-level "
        "BPE with [CLS] [SEP] [MASK] [PAD] [UNK]), bert-japanese (cl-tohoku's: MeCab words, then WordPiece)",
    )
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to save the tokenizer to")
    p.add_argument(
        "--lang",
        choices=("en", *SEGMENTED_LANGS),
        default="en",
        help="language of the corpus: picks --corpus builtin's sample; all but en and zh default to "
        "--no-lowercase; all but en to --pre-segment",
    )
    pre = p.add_mutually_exclusive_group()
    pre.add_argument("--pre-segment", dest="pre_segment", action="store_true", default=None,
                     help="learn the vocabulary from the text cut at segmenter words (no token straddles "
                     "two words; tokenize with tokenizer.pre_segment: true)")  # fmt: skip
    pre.add_argument("--no-pre-segment", dest="pre_segment", action="store_false")
    p.add_argument("--segmenter", default=None,
                   help="segmenter for --pre-segment (default: auto; pyvi for --lang vi)")  # fmt: skip
    lower = p.add_mutually_exclusive_group()
    lower.add_argument("--lowercase", dest="lowercase", action="store_true", default=None)
    lower.add_argument("--no-lowercase", dest="lowercase", action="store_false")
    p.add_argument("--min-frequency", type=int, default=2)
    p.add_argument("--document-separator", choices=("line", "blank_line"), default="line")
    p.add_argument("--text-column", default="text", help="text column of jsonl/parquet files")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")


def main(args: argparse.Namespace) -> int:
    import tempfile
    import time

    from wwm import fs
    from wwm.config import DataConfig
    from wwm.data.sources import SourceStats, iter_documents
    from wwm.errors import WWMError
    from wwm.tokenizer_train import train_tokenizer

    if fs.isfile(args.out) or (fs.listdir(args.out) and not args.force):
        raise WWMError(f"--out {args.out!r} exists and is not empty; choose a new folder or pass --force")
    if fs.is_remote(args.out):
        fs.check_writable_folder(args.out, "--out")  # credentials and permission, before the training
    start = time.perf_counter()
    if args.corpus == ["builtin"]:
        data = DataConfig(source="builtin", builtin_lang=args.lang)
    else:
        data = DataConfig(
            source="files",
            train_files=tuple(args.corpus),
            document_separator=args.document_separator,
            text_column=args.text_column,
        )
    stats = SourceStats()
    texts = list(iter_documents(data, "train", stats))
    if not texts:
        raise WWMError(f"the corpus {' '.join(args.corpus)} holds no text; give files with text")
    lowercase = args.lowercase
    if lowercase is None and args.lang not in ("en", "zh"):
        lowercase = False  # lowercasing strips accents: kana voicing marks, Thai, Lao, ... vowel signs
    pre_segment = args.pre_segment
    if pre_segment is None:
        pre_segment = args.lang != "en" and args.kind not in WORD_STRUCTURED_KINDS
    segmenter = args.segmenter or ("pyvi" if args.lang == "vi" else "auto")
    tokenizer = train_tokenizer(
        texts,
        args.kind,
        args.vocab_size,
        lowercase,
        min_frequency=args.min_frequency,
        pre_segment=segmenter if pre_segment else None,
    )
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="wwm-tokenizer-") as staging:
        out = staging if fs.is_remote(args.out) else args.out  # a bucket: saved here, then uploaded
        fs.makedirs(out)
        tokenizer.save_pretrained(out)
        if pre_segment:
            import json

            fs.write_text(fs.join(out, PRE_SEGMENT_FILE), json.dumps({"segmenter": segmenter}) + "\n")
        reloaded = AutoTokenizer.from_pretrained(out)
        if fs.is_remote(args.out):
            fs.upload_tree(out, args.out, last=("tokenizer_config.json",))
    specials = {
        role: getattr(reloaded, f"{role}_token")
        for role in ("cls", "sep", "pad", "mask", "unk", "bos", "eos")
        if getattr(reloaded, f"{role}_token", None) is not None
    }
    sample = texts[0][:80]
    print(f"trained a {args.kind} tokenizer of {len(reloaded)} tokens on {stats.documents:,} documents "
          f"({sum(map(len, texts)):,} characters) in {time.perf_counter() - start:.1f} s")  # fmt: skip
    if stats.replaced or stats.empty_skipped:
        print(
            f"  {stats.empty_skipped:,} empty lines skipped, {stats.replaced:,} non-UTF-8 sequences replaced"
        )
    print(f"  saved to {args.out} (AutoTokenizer.from_pretrained loads it)")
    if pre_segment:
        print(f"  learnt from text cut at {segmenter} words: tokenize with tokenizer.pre_segment: true"
              + (f", tokenizer.segmenter: {segmenter}" if segmenter != "auto" else ""))  # fmt: skip
    print(f"  special tokens: {', '.join(f'{k}={v}' for k, v in specials.items())}")
    if pre_segment:  # as it will be used: cut at segmenter words first
        from wwm.words import tokenize_with_word_ids

        ids = tokenize_with_word_ids(
            reloaded, [sample], add_special_tokens=False, segmenter=segmenter, pre_segment=True
        )["input_ids"][0]
        tokens = reloaded.convert_ids_to_tokens(ids)
    else:
        tokens = reloaded.tokenize(sample)
    print(f"  {sample!r} -> {tokens[:24]}")
    return 0
