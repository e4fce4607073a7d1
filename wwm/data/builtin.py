"""The built-in corpus: English text that ships with every CPython, so a run needs no download.

Documents, in this order:

1. the paragraphs of Python's documentation topics (``pydoc_data.topics.topics``, the text behind
   ``help("topic")``), topics in sorted order; indented blocks (code, grammar) and heading underlines are
   dropped and the lines of a paragraph joined with spaces;
2. the docstrings (module, class, function; source order, depth first) of a fixed list of pure-Python
   standard-library modules, read with ``ast`` from their source files (nothing is imported, so no module
   side effect runs). A docstring of fewer than 8 words is skipped.

About 1.2 MB of text (~1.5 k topic paragraphs, ~4 k docstrings) on CPython 3.11. The list below holds
only modules present in CPython 3.10 to 3.13; one missing from a build (a distribution that strips the
standard library) is skipped, and the modules used are part of the fingerprint, as are the Python version
and each source file's size and modification time, so a cache never mixes two corpora.

The Chinese, Japanese, Thai, Lao, Khmer, Myanmar, Tibetan and Vietnamese built-ins (``lang="zh"``,
``"ja"``, ``"th"``, ``"lo"``, ``"km"``, ``"my"``, ``"bo"``, ``"vi"``) are the small samples of
``wwm/data/sample_<lang>.txt`` (written for wwm), one paragraph a document.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import platform
import re
from pathlib import Path
from typing import Any

from wwm.errors import WWMError

BUILTIN_FORMAT = 1  # bump when the selection or cleaning rules change

STDLIB_MODULES = (
    "abc", "argparse", "ast", "base64", "bdb", "bisect", "bz2", "calendar", "cmd", "code", "codecs",
    "codeop", "collections", "colorsys", "compileall", "configparser", "contextlib", "copy", "copyreg",
    "csv", "dataclasses", "datetime", "difflib", "dis", "doctest", "enum", "filecmp", "fileinput",
    "fnmatch", "fractions", "ftplib", "functools", "getopt", "getpass", "gettext", "glob", "graphlib",
    "gzip", "hashlib", "heapq", "hmac", "imaplib", "inspect", "ipaddress", "keyword", "linecache",
    "locale", "lzma", "mailbox", "mimetypes", "modulefinder", "netrc", "numbers", "operator", "optparse",
    "os", "pathlib", "pdb", "pickle", "pickletools", "pkgutil", "platform", "plistlib", "poplib",
    "posixpath", "pprint", "profile", "pstats", "py_compile", "pyclbr", "pydoc", "queue", "quopri",
    "random", "reprlib", "rlcompleter", "runpy", "sched", "secrets", "selectors", "shelve", "shlex",
    "shutil", "signal", "smtplib", "socket", "socketserver", "ssl", "stat", "statistics", "string",
    "subprocess", "symtable", "sysconfig", "tabnanny", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "token", "tokenize", "trace", "traceback", "tracemalloc", "types", "typing", "uuid",
    "warnings", "wave", "weakref", "webbrowser", "zipapp", "zipimport", "zoneinfo", "_pydecimal",
    "_collections_abc", "_pyio", "asyncio.base_events", "asyncio.events", "asyncio.futures",
    "asyncio.locks", "asyncio.queues", "asyncio.streams", "asyncio.subprocess", "asyncio.tasks",
    "asyncio.transports", "concurrent.futures._base", "concurrent.futures.process",
    "concurrent.futures.thread", "email.message", "email.utils", "email.parser", "email.header",
    "email.policy", "email._policybase", "email.feedparser", "http.client", "http.server",
    "http.cookies", "http.cookiejar", "importlib.abc", "importlib.util", "json", "json.decoder",
    "json.encoder", "logging", "logging.handlers", "logging.config", "multiprocessing.connection",
    "multiprocessing.pool", "multiprocessing.managers", "multiprocessing.process",
    "multiprocessing.queues", "multiprocessing.synchronize", "unittest.case", "unittest.mock",
    "unittest.loader", "unittest.result", "unittest.runner", "urllib.parse", "urllib.request",
    "urllib.robotparser", "xml.dom.minidom", "xml.etree.ElementTree", "xml.sax.handler",
    "xml.sax.saxutils", "xmlrpc.client", "xmlrpc.server", "wsgiref.handlers", "wsgiref.simple_server",
)  # fmt: skip

_MIN_DOCSTRING_WORDS = 8
_UNDERLINE = set("*=-~^#+")


def _module_file(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None) if spec is not None else None
    if not origin or not origin.endswith(".py") or not os.path.isfile(origin):
        return None
    return origin


def _topics_file() -> str:
    path = _module_file("pydoc_data.topics")
    if path is None:
        raise WWMError(
            "the built-in corpus needs Python's pydoc_data module, which this Python lacks; install the "
            "full standard library (e.g. the libpython3-stdlib / python3-doc package) or set "
            "data.source: files with your own text"
        )
    return path


def _topic_paragraphs() -> list[str]:
    from pydoc_data.topics import topics

    paragraphs = []
    for key in sorted(topics):
        for block in re.split(r"\n[ \t]*\n", topics[key]):
            if not block.strip() or block.startswith((" ", "\t")):
                continue
            lines = [line for line in block.split("\n") if not (set(line.strip()) <= _UNDERLINE)]
            text = " ".join(" ".join(lines).split())
            if text:
                paragraphs.append(text)
    return paragraphs


def _docstrings(path: str) -> list[str]:
    # local: the package's built-in corpus
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc.split()) >= _MIN_DOCSTRING_WORDS:
                out.append(doc)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


_DATA = Path(__file__).resolve().parent
#: Built-in samples written for wwm, one paragraph a line: Chinese, Japanese, Thai, Lao, Khmer, Myanmar,
#: Tibetan, Vietnamese (with some English words and numbers in each).
SAMPLE_FILES = {lang: f"sample_{lang}.txt" for lang in ("zh", "ja", "th", "lo", "km", "my", "bo", "vi")}
SAMPLE_LANGS = ("en", *SAMPLE_FILES)


def builtin_sample_text(lang: str = "en") -> list[str]:
    """A small text available on any machine without a download, as a list of paragraphs (tests,
    `wwm inspect`, benchmarks): "en" is part 1 of the English corpus (the documentation topics, ~260 KB);
    the others ("zh", "ja", "th", "lo", "km", "my", "bo", "vi") are the whole corpus of that language."""
    if lang == "en":
        _topics_file()
        return _topic_paragraphs()
    if lang in SAMPLE_FILES:
        path = _DATA / SAMPLE_FILES[lang]
        if not path.is_file():
            raise WWMError(f"the {lang!r} sample text {path} is missing; reinstall wwm (pip install wwm)")
        # local: the package's built-in corpus
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    raise WWMError(
        f"no built-in text for language {lang!r}; use one of {', '.join(map(repr, SAMPLE_LANGS))} "
        "(data.builtin_lang, --lang)"
    )


def builtin_documents(lang: str = "en") -> list[str]:
    """The documents of the built-in corpus of ``lang`` (one of ``SAMPLE_LANGS``), in their fixed order."""
    docs = builtin_sample_text(lang)
    if lang == "en":
        for name in STDLIB_MODULES:
            path = _module_file(name)
            if path is not None:
                docs.extend(_docstrings(path))
    return docs


def builtin_fingerprint(lang: str = "en") -> dict[str, Any]:
    """What the built-in corpus depends on (cheap: file sizes and times, no parsing)."""
    info: dict[str, Any] = {"format": BUILTIN_FORMAT, "lang": lang, "python": platform.python_version()}
    if lang == "en":
        files = [("pydoc_data.topics", _topics_file())]
        files += [(name, path) for name in STDLIB_MODULES if (path := _module_file(name)) is not None]
        stats = [(name, os.stat(path).st_size, os.stat(path).st_mtime_ns) for name, path in files]
        info["files"] = hashlib.sha256(repr(stats).encode()).hexdigest()
        info["modules"] = len(files)
    else:
        docs = builtin_documents(lang)
        info["sha256"] = hashlib.sha256("\n".join(docs).encode()).hexdigest()
    return info
