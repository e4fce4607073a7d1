"""wwm: whole-word masking for BERT/RoBERTa-style pretraining.

The core is framework-free (numpy only at import). Word boundaries live in `wwm.words`, the
masking spec in `wwm.masking` (normative text: docs/masking.md), keyed randomness in `wwm.rng`.
"""

from wwm.errors import WWMError
from wwm.masking import IGNORE_INDEX, MaskedBatch, MaskingConfig, WholeWordMasker

__all__ = ["IGNORE_INDEX", "MaskedBatch", "MaskingConfig", "WWMError", "WholeWordMasker"]
__version__ = "0.1.0"
