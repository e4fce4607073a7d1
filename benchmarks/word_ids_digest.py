"""Per-document digests of the token ids, word ids and masks of the Chinese sample and
../shared/corpora/zh_fortunes.txt (policy segmenter/auto and cjk/jieba; WordPiece, byte-level BPE and
Unigram tokenizers trained on the sample), written as JSON: run it with two checkouts on PYTHONPATH and
compare, to prove a change leaves Chinese word ids bit-identical (issue 26 did, docs/words.md):

    PYTHONPATH=OLD python benchmarks/word_ids_digest.py old.json
    PYTHONPATH=NEW python benchmarks/word_ids_digest.py new.json
"""

import hashlib
import json
import sys
import warnings

import numpy as np

import wwm
from wwm.data.builtin import builtin_sample_text
from wwm.masking import MaskingConfig, WholeWordMasker
from wwm.tokenizer_train import train_tokenizer
from wwm.words import tokenize_with_word_ids

warnings.simplefilter("ignore")
print(wwm.__file__, file=sys.stderr)
zh = builtin_sample_text("zh")
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
with open(ROOT.parent / "shared" / "corpora" / "zh_fortunes.txt", encoding="utf-8") as f:
    fort = [line.strip() for line in f if line.strip()]
toks = {k: train_tokenizer(zh, k, 2000) for k in ("wordpiece", "bpe", "unigram")}
out_docs = {}
for name, texts in (("sample", zh), ("fortunes", fort)):
    for kind, tok in toks.items():
        for policy, seg in (("segmenter", "auto"), ("cjk", "jieba")):
            masker = WholeWordMasker.from_tokenizer(tok, MaskingConfig(mask_prob=0.15))
            digests = []
            for i in range(0, len(texts), 500):
                out = tokenize_with_word_ids(
                    tok, texts[i : i + 500], policy=policy, segmenter=seg, max_length=256, truncation=True
                )
                for j, (ids, w) in enumerate(zip(out["input_ids"], out["word_ids"], strict=True)):
                    m = masker(np.asarray([ids]), w[None].astype(np.int64), np.array([i + j]), 0)
                    h = hashlib.sha256(
                        np.asarray(ids, np.int64).tobytes()
                        + w.tobytes()
                        + m.input_ids.tobytes()
                        + m.labels.tobytes()
                    )
                    digests.append(h.hexdigest()[:16])
            out_docs[f"{name} {kind} {policy}/{seg}"] = digests
            print(name, kind, policy, seg, hashlib.sha256("".join(digests).encode()).hexdigest()[:16])
json.dump(out_docs, open(sys.argv[1], "w"))
