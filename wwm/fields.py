"""Field helpers of the config sections: path fields and the positivity check.

A leaf module (it imports nothing of wwm but the errors), so that both the run config (`wwm.config.sections`)
and the model families' own sections (`wwm.families`), which the run config imports, use it without an
import circle.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

from wwm.errors import WWMError

PATH_KEY = "wwm_path"  # field metadata: "file" (a path) or "hub" (a path or a Hugging Face Hub name)


def path_field(default: Any = None, *, hub: bool = False, **kwargs: Any) -> Any:
    """A dataclass field that holds a path (or a list of paths).

    ``hub=True``: the value may also be a Hugging Face Hub name ("bert-base-uncased"); it is resolved as a
    path only if that path exists or the value starts with ".", "/" or "~".
    """
    metadata = {PATH_KEY: "hub" if hub else "file"}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def positive(name: str, value: int | float | None, allow_none: bool = False) -> None:
    """WWMError naming config key `name` unless `value` is a finite number > 0 (or None, where allowed): NaN
    passes `value <= 0`, so it is checked by name."""
    if value is None and allow_none:
        return
    if value is None or not value > 0 or not math.isfinite(value):
        raise WWMError(f"{name} must be a finite number > 0; got {value!r}")
