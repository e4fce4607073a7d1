"""wwm_cli: the application — the `wwm` command line, the benchmarks and the parity orchestration.

The one package that may import both trainers (`wwm_jax`, `wwm_torch`) and the core (`wwm`); the core
imports neither trainer nor any deep-learning framework (tests/test_layering.py). docs/architecture.md
has the layers.
"""

from wwm_cli.main import main, parse_args

__all__ = ["main", "parse_args"]
