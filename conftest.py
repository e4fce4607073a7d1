"""Test-session set-up shared by tests/ and parity_tests/ (their own conftest.py files hold the fixtures).

One persistent XLA compilation cache for the whole session. Most of the suite's time is JAX compiling the
same few tiny training steps again: in each test's subprocesses (a run, the run killed, its resume, the
uninterrupted run to compare with) and in each xdist worker. The controller makes one folder and sets
jax's own environment variables; the xdist workers and every subprocess a test starts inherit them, so a
step compiled once is loaded from disk afterwards (`tests/test_jax_train.py`'s SIGKILL/SIGTERM resume:
76 s -> 49 s with a cold cache, 41 s warm). A cache hit is the same executable, so nothing a test
compares changes. Only compiles of a second or more are kept (jax's default threshold: the steps, not
the many tiny helpers), and without a size limit: a limit makes jax list the whole folder under a file
lock on every write, which cost more than the cache saved (CI 21.4 min with it, 2026-12-06). Without the
lock, a process may read an entry another is still writing; jax then warns and compiles (it never fails).
The folder is removed at the end.

Set ``JAX_COMPILATION_CACHE_DIR`` yourself to keep a cache across sessions, or ``WWM_TEST_XLA_CACHE=0``
to compile everything afresh.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

_CACHE_VARIABLES = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def pytest_configure(config) -> None:
    if os.environ.get("WWM_TEST_XLA_CACHE") == "0" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return  # turned off, or set by the user (or by the xdist controller for its workers)
    folder = tempfile.mkdtemp(prefix="wwm-test-xla-cache-")
    config._wwm_xla_cache = folder
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    for name, value in _CACHE_VARIABLES.items():
        os.environ.setdefault(name, value)
    if "jax" in sys.modules:  # jax reads the variables at import: imported already, tell it directly
        import jax

        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config) -> None:
    folder = getattr(config, "_wwm_xla_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
