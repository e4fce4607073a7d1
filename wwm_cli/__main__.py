"""`python -m wwm_cli ...` is the `wwm` console script (torchrun and TPU launches use it)."""

import sys

from wwm_cli.main import main

sys.exit(main())
