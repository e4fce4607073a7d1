"""Parity tests compare float32 results to 1e-5, so neither framework may drop to TF32/bf16 matmul passes."""

import jax
import torch

jax.config.update("jax_default_matmul_precision", "highest")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
