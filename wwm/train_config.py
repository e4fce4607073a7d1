"""Config sections shared by the JAX and the PyTorch trainer (one YAML file drives both).

Each section is a frozen dataclass with defaults; `wwm.config.RunConfig` holds one field per
section, and `wwm.config.from_dict` validates types and names. Validation of values lives in each
`__post_init__` (raise WWMError naming the key and the fix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from wwm.errors import WWMError


def _positive(name: str, value: int | float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise WWMError(f"{name} must be > 0; got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The encoder. Sizes apply to a fresh model; `pretrained` starts from a Hugging Face directory.

    vocab_size, pad/bos/eos ids come from the tokenizer; RoBERTa's position table gets the two
    extra slots its position ids need (padding_idx + 1 offset).
    """

    type: Literal["bert", "roberta"] = "bert"
    # A Hugging Face directory (safetensors + config.json) to start from; the sizes below are then
    # ignored. The metadata marks a path (relative to the config file) or a Hub name, as
    # wwm.config.path_field(hub=True) does (this module cannot import wwm.config: it imports us).
    pretrained: str | None = field(default=None, metadata={"wwm_path": "hub"})
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: Literal["gelu", "gelu_new", "relu"] = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int | None = None  # null: 2 for bert, 1 for roberta
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            _positive(f"model.{name}", getattr(self, name))
        if self.hidden_size % self.num_attention_heads:
            raise WWMError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by model.num_attention_heads "
                f"({self.num_attention_heads})"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise WWMError(f"model.{name} must be in [0, 1); got {getattr(self, name)}")

    def hf_config_dict(self, tokenizer: Any, max_seq_len: int) -> dict[str, Any]:
        """The Hugging Face config.json fields of a fresh model (BertConfig / RobertaConfig).

        The one place where our config becomes the model's: both trainers build from it, so their
        models have the same shapes.
        """
        roberta = self.type == "roberta"
        positions = max(self.max_position_embeddings, max_seq_len + (2 if roberta else 0))
        d = {
            "model_type": self.type,
            "architectures": ["RobertaForMaskedLM" if roberta else "BertForMaskedLM"],
            "vocab_size": len(tokenizer),
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act,
            "max_position_embeddings": positions,
            "type_vocab_size": self.type_vocab_size or (1 if roberta else 2),
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "initializer_range": self.initializer_range,
            "pad_token_id": tokenizer.pad_token_id,
            "position_embedding_type": "absolute",
            "tie_word_embeddings": True,
        }
        if roberta:
            d["bos_token_id"] = (
                tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
            )
            d["eos_token_id"] = (
                tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
            )
        return d


@dataclass(frozen=True)
class OptimConfig:
    """AdamW (no weight decay on LayerNorm weights and biases), warmup then decay, clipping."""

    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 100
    schedule: Literal["linear", "cosine", "constant"] = "linear"  # after warmup, to 0 at train.max_steps
    max_grad_norm: float | None = 1.0  # null: no clipping

    def __post_init__(self) -> None:
        _positive("optim.learning_rate", self.learning_rate)
        _positive("optim.max_grad_norm", self.max_grad_norm, allow_none=True)
        if self.warmup_steps < 0:
            raise WWMError(f"optim.warmup_steps must be >= 0; got {self.warmup_steps}")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise WWMError(f"optim.beta1/beta2 must be in [0, 1); got {self.beta1}, {self.beta2}")


@dataclass(frozen=True)
class TrainConfig:
    """The loop. `global_batch_size` is sequences per optimizer step over all devices, hosts and
    accumulation micro-batches; both frameworks see the same global batches (docs/data.md)."""

    framework: Literal["jax", "torch"] = "jax"
    global_batch_size: int = 32
    grad_accum_steps: int = 1
    max_steps: int = 1000
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute dtype; parameters stay float32
    log_every_steps: int = 10
    torch_compile: bool = False  # torch only
    dataloader_num_workers: int = 0  # torch only
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"  # torch only (eager: exact CPU parity tests)

    def __post_init__(self) -> None:
        for name in ("global_batch_size", "grad_accum_steps", "max_steps", "log_every_steps"):
            _positive(f"train.{name}", getattr(self, name))
        if self.global_batch_size % self.grad_accum_steps:
            raise WWMError(
                f"train.global_batch_size ({self.global_batch_size}) must be divisible by "
                f"train.grad_accum_steps ({self.grad_accum_steps})"
            )


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 500
    keep: int = 3  # keep the newest N checkpoints
    resume: bool = True  # continue from the newest checkpoint in output_dir if there is one
    export_hf_at_end: bool = True  # write a Hugging Face directory (model + tokenizer) at the end

    def __post_init__(self) -> None:
        _positive("checkpoint.every_steps", self.every_steps)
        _positive("checkpoint.keep", self.keep)


@dataclass(frozen=True)
class EvalConfig:
    every_steps: int = 200
    max_batches: int | None = None  # null: the whole validation split
    batch_size: int | None = None  # null: train.global_batch_size

    def __post_init__(self) -> None:
        _positive("eval.every_steps", self.every_steps)
        _positive("eval.max_batches", self.max_batches, allow_none=True)
        _positive("eval.batch_size", self.batch_size, allow_none=True)


@dataclass(frozen=True)
class LoggingConfig:
    jsonl: bool = True  # <output_dir>/metrics.jsonl
    tensorboard: bool = True  # <output_dir>/tensorboard
    progress_bar: bool = True
    peak_flops_per_device: float | None = None  # for MFU; null: from the table of known chips


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh axes (JAX `sharded` mode). -1 on one axis: all remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1


def _default_rules() -> tuple[tuple[str, str | None], ...]:
    # logical axis name of the models (docs/models.md) -> mesh axis (or null: replicated)
    return (
        ("batch", "data"),
        ("vocab", "tensor"),
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("kv", None),
        ("position", None),
        ("type", None),
        ("norm", None),
    )


@dataclass(frozen=True)
class DistributedConfig:
    """Multi-host JAX (`jax.distributed.initialize`). `auto`: initialize when the environment says
    there are several processes (TPU pods, SLURM, or the fields below)."""

    initialize: Literal["auto", "always", "never"] = "auto"
    coordinator_address: str | None = None  # "host:port"
    num_processes: int | None = None
    process_id: int | None = None


@dataclass(frozen=True)
class ParallelConfig:
    """JAX parallelism: `sharded` (jit over a (data, fsdp, tensor) mesh, shardings from the rules),
    `pmap` (data parallel with explicit psum), or `single` (one device)."""

    mode: Literal["sharded", "pmap", "single"] = "sharded"
    mesh: MeshConfig = field(default_factory=MeshConfig)
    rules: tuple[tuple[str, str | None], ...] = field(default_factory=_default_rules)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
