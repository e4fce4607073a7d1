"""Document chopping: a long document cut into pieces where every supported pre-tokenizer splits anyway, so
the pieces give the tokens of the whole document. The tokenizer loader (`wwm.data.tokenizer.tokenize_table`)
tokenizes long documents in these pieces, and the tokenizer trainer (`wwm.tokenizer_train`) counts words in
them; both import this module (a leaf: it imports nothing of wwm)."""

from __future__ import annotations

__all__ = ["MAX_PIECE_CHARS", "text_pieces"]

# A document longer than this is tokenized in pieces (joined again into one document): a tokenizer call
# holds ~200 bytes per character (encodings, offsets, word ids); a 10 MB line in one call took 2.3 GB.
MAX_PIECE_CHARS = 1 << 16
_SPACES = " \t\n\r"


def text_pieces(text: str, limit: int = MAX_PIECE_CHARS) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` characters, each cut placed at the start of a run of
    whitespace that begins with a space (where every supported pre-tokenizer starts a new word: BERT's
    and byte-level BPE's split at any whitespace, Metaspace only at a space), so the tokens stay those of
    the whole text; a stretch of ``limit`` characters without such a place is cut at ``limit``."""
    if len(text) <= limit:
        return [text]
    pieces = []
    start = 0
    while len(text) - start > limit:
        cut = _cut(text, start, start + limit)
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _cut(text: str, start: int, end: int) -> int:
    """The last start of a whitespace run in (start, end] whose first character is a space, else end."""
    i = end + 1
    while (i := text.rfind(" ", start + 1, i)) > start:
        while i > start and text[i - 1] in _SPACES:  # back to the start of the run
            i -= 1
        if i > start and text[i] == " ":
            return i
    return end
