"""Every section of a run config, in one place: typed frozen dataclasses with their defaults.

`RunConfig` holds one field per section; `wwm.config.loader.from_dict` reads them from YAML, checking
names and types (Literal for every closed choice). Value checks live in each `__post_init__` (raise
`WWMError` naming the key and the fix). Adding a section is one dataclass here and one field of
`RunConfig`. Where a section is used: data/tokenizer -> wwm.data, masking -> wwm.masking (the spec:
docs/masking.md), model/optim/train/checkpoint/eval/logging/parallel -> both trainers.
"""

from __future__ import annotations

import codecs
import dataclasses
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from wwm.errors import WWMError, WWMWarning
from wwm.families import BertModelConfig, ModelSection, ModernBertModelConfig, family
from wwm.families import ModelFields as ModelFields  # (re-exported: the model sections' common fields)
from wwm.families import ModernBertFields as ModernBertFields  # (re-exported: the old model.modernbert)
from wwm.fields import path_field
from wwm.fields import positive as _positive

# Data and tokenizer (wwm.data, wwm.words)


@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from and how it becomes blocks of ``max_seq_len`` tokens (docs/data.md)."""

    source: Literal["builtin", "files", "hub"] = "builtin"
    builtin_lang: Literal["en", "zh", "ja", "th", "lo", "km", "my", "bo", "vi"] = "en"
    # source: files. Files, folders (every file inside, recursively, sorted) or glob patterns.
    train_files: tuple[str, ...] = path_field(())
    file_format: Literal["auto", "text", "jsonl", "parquet"] = "auto"
    text_column: str = "text"
    document_separator: Literal["line", "blank_line"] = "line"
    # Text files are decoded with `encoding`; bytes that are not valid in it stop the run with one line
    # naming the file and the byte (on_decode_error: error), or become U+FFFD and are counted in the
    # `wwm prepare` summary (replace). JSON lines too (read with `encoding`).
    encoding: str = "utf-8"
    on_decode_error: Literal["error", "replace"] = "error"
    # source: hub (needs network on the first run; the download is cached by `datasets`).
    hub_dataset: str | None = None
    hub_config: str | None = None
    hub_split: str = "train"
    hub_revision: str | None = None
    max_documents: int | None = None  # use only the first N non-empty documents (quick runs)
    streaming: bool = False
    shuffle_buffer: int = 10_000  # streaming only: blocks held by the shuffle buffer
    max_seq_len: int = 128
    packing: Literal["full_sentences", "doc_per_block", "packed_documents"] = "full_sentences"
    validation_fraction: float = 0.0
    validation_files: tuple[str, ...] = path_field(())
    split_seed: int = 0  # seeds the document hash that picks validation documents
    num_proc: int = 1
    map_batch_size: int = 1000
    cache_dir: str | None = path_field(None)  # null: $WWM_CACHE_DIR or ~/.cache/wwm; or s3://, gs://
    # A bucket cache_dir is read from a verified local copy (default), or, with remote_read, row by row:
    # merged range reads, `remote_prefetch_steps` global steps read ahead, at most `remote_cache_mb` MiB of
    # rows kept (docs/data.md "Prepared data in a bucket").
    remote_read: bool = False
    remote_prefetch_steps: int = 4
    remote_cache_mb: int = 1024
    # The order of the training examples (docs/data.md "Order and sharding"): rows (a keyed permutation of
    # all rows, rule feistel-6; a resumed run keeps its recorded rule) or groups (rule groups-G-K-r: each
    # global batch takes r = train.global_batch_size / order_window_groups rows from each of
    # order_window_groups groups of order_group_rows adjacent rows; remote mode then reads whole groups).
    # 1024 rows: ~1 MB of token ids a read at L = 512 (object stores serve reads of a MB or more at full rate).
    order: Literal["rows", "groups"] = "rows"
    order_group_rows: int = 1024
    order_window_groups: int = 64
    # Preparation splits the input into segments (one file, or this many bytes of a large text file cut at
    # line starts), each prepared on its own (docs/data.md "Segments"); in the cache key.
    segment_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        if self.max_seq_len < 8 or self.max_seq_len > 1 << 20:
            raise WWMError(f"data.max_seq_len must be between 8 and 1048576 tokens; got {self.max_seq_len}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise WWMError(
                f"data.validation_fraction must be in [0, 1) (e.g. 0.02); got {self.validation_fraction}"
            )
        if self.validation_fraction > 0 and self.validation_files:
            raise WWMError(
                "set either data.validation_fraction or data.validation_files, not both; "
                "use validation_fraction: 0 with validation_files"
            )
        if self.source == "files" and not self.train_files:
            raise WWMError(
                "data.source is 'files' but data.train_files is empty; list your text/jsonl/parquet files, "
                "folders or glob patterns under data.train_files"
            )
        if self.source == "hub" and not self.hub_dataset:
            raise WWMError(
                "data.source is 'hub' but data.hub_dataset is not set; give a dataset name such as "
                "'wikitext' (with data.hub_config: wikitext-103-raw-v1)"
            )
        for name in ("num_proc", "map_batch_size", "order_group_rows", "order_window_groups"):
            if getattr(self, name) < 1:
                raise WWMError(f"data.{name} must be >= 1; got {getattr(self, name)}")
        if self.remote_prefetch_steps < 0:
            raise WWMError(
                f"data.remote_prefetch_steps must be >= 0 (0: no read-ahead); got {self.remote_prefetch_steps}"
            )
        if self.remote_cache_mb < 1:
            raise WWMError(
                f"data.remote_cache_mb must be >= 1 (MiB of rows kept); got {self.remote_cache_mb}"
            )
        if self.order == "groups" and self.streaming:
            raise WWMError(
                "data.order: groups orders prepared (random-access) data, and data.streaming reads in stream "
                "order through a shuffle buffer; set data.streaming: false, or data.order: rows"
            )
        if self.shuffle_buffer < 0:
            raise WWMError(f"data.shuffle_buffer must be >= 0 (0: stream order); got {self.shuffle_buffer}")
        if self.max_documents is not None and self.max_documents < 1:
            raise WWMError(f"data.max_documents must be >= 1 or null; got {self.max_documents}")
        if not 0 <= self.split_seed < 2**64:
            raise WWMError(f"data.split_seed must be in [0, 2^64); got {self.split_seed}")
        if self.segment_bytes < 4096:
            raise WWMError(
                f"data.segment_bytes must be >= 4096 (default 268435456, 256 MiB); got {self.segment_bytes}"
            )
        try:
            name = codecs.lookup(self.encoding).name
        except LookupError:
            raise WWMError(
                f"data.encoding {self.encoding!r} is not a known text encoding; use e.g. utf-8, latin-1, cp1252, "
                "shift_jis, gb18030"
            ) from None
        object.__setattr__(self, "encoding", "utf-8" if name == "utf-8" else self.encoding)


@dataclass(frozen=True)
class TokenizerTrainConfig:
    """Train a tokenizer on the training documents (saved to <output_dir>/tokenizer)."""

    # wwm.tokenizer_train; bert-japanese: cl-tohoku's BertJapaneseTokenizer (MeCab words, then WordPiece)
    kind: Literal["wordpiece", "bpe", "unigram", "modernbert", "bert-japanese"] = "wordpiece"
    vocab_size: int = 4000
    lowercase: bool | None = None  # null: True for wordpiece, False otherwise
    min_frequency: int = 2


@dataclass(frozen=True)
class TokenizerConfig:
    """A fast tokenizer: ``path`` (a folder, a tokenizer.json file or a Hub name) or ``train``."""

    path: str | None = path_field(None, hub=True)
    train: TokenizerTrainConfig | None = None
    word_policy: Literal["tokenizer", "whitespace", "vocab", "segmenter", "cjk"] = "tokenizer"
    # policy segmenter (old name cjk): auto picks a segmenter per document and script (docs/words.md)
    segmenter: Literal[
        "auto", "jieba", "fugashi", "pythainlp", "laonlp", "khmernltk", "pyidaungsu", "botok", "pyvi",
        "underthesea", "none",
    ] = "auto"  # fmt: skip
    # split the text into `segmenter` words before the fast tokenizer, so that no token straddles two
    # words (train the tokenizer that way too: tokenizer.train does when this is on; docs/words.md)
    pre_segment: bool = False

    def __post_init__(self) -> None:
        if self.path is not None and self.train is not None:
            raise WWMError(
                "set either tokenizer.path (an existing tokenizer) or tokenizer.train (train one), not both"
            )
        if self.segmenter != "auto" and self.word_policy not in ("segmenter", "cjk") and not self.pre_segment:
            raise WWMError(
                f"tokenizer.segmenter {self.segmenter!r} applies only to word_policy 'segmenter' or "
                f"pre_segment: true, but word_policy is {self.word_policy!r}; set word_policy: segmenter, "
                "or remove segmenter"
            )
        if self.pre_segment and self.segmenter == "none":
            raise WWMError(
                "tokenizer.pre_segment: true splits the text into segmenter words, but segmenter is 'none'; "
                "name a segmenter (or auto), or set pre_segment: false"
            )


# --------------------------------------------------------------------------------------------------
# Masking (wwm.masking; the rules: docs/masking.md)
# --------------------------------------------------------------------------------------------------


def _default_ngram_probs(max_ngram: int) -> tuple[float, ...]:
    # Megatron-LM's default: P(n) proportional to 1/n.
    weights = [1.0 / n for n in range(1, max_ngram + 1)]
    total = sum(weights)
    return tuple(w / total for w in weights)


@dataclass(frozen=True)
class MaskingConfig:
    """What to mask and how. Every field is validated on construction.

    mask_prob: share of eligible tokens to mask (exact budget) or per-word probability (bernoulli).
    budget: "exact" (n = min(max_predictions, max(1, E * mask_prob rounded half up)) for E eligible
        tokens, exactly: see `exact_budget`; Google BERT's fill rule) or "bernoulli" (each word
        independently, capped by max_predictions if set).
    max_predictions: cap on masked tokens per row (None = no cap).
    max_ngram: 1 = single words; >1 = spans of 1..max_ngram consecutive words (Megatron/MacBERT).
    ngram_probs: probability of each span length 1..max_ngram (default proportional to 1/n).
    mask_token_ratio / random_token_ratio: share of masked words (or tokens) replaced by the mask
        token / by a random non-special token; the rest keep their original token.
    replacement_unit: "word" (one decision per word, default) or "token".
    seed: the run's seed; the mask of an example depends on (seed, epoch, example id, its tokens).
    """

    mask_prob: float = 0.15
    budget: Literal["exact", "bernoulli"] = "exact"
    max_predictions: int | None = None
    max_ngram: int = 1
    ngram_probs: tuple[float, ...] | None = field(default=None)
    mask_token_ratio: float = 0.8
    random_token_ratio: float = 0.1
    replacement_unit: Literal["word", "token"] = "word"
    seed: int = 0

    def __post_init__(self) -> None:
        def check_probability(name: str, value: float) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise WWMError(f"masking.{name} must be a probability in [0, 1]; got {value!r}")

        check_probability("mask_prob", self.mask_prob)
        if self.mask_prob == 0:
            raise WWMError(
                "masking.mask_prob must be > 0: at 0 nothing is to be predicted (the exact budget would still mask "
                "one token per row); use e.g. 0.15"
            )
        check_probability("mask_token_ratio", self.mask_token_ratio)
        check_probability("random_token_ratio", self.random_token_ratio)
        if self.mask_token_ratio + self.random_token_ratio > 1.0 + 1e-9:
            raise WWMError(
                "masking.mask_token_ratio + masking.random_token_ratio must be <= 1 (the rest keep "
                f"their token); got {self.mask_token_ratio} + {self.random_token_ratio} = "
                f"{self.mask_token_ratio + self.random_token_ratio}"
            )
        for name in ("budget", "replacement_unit"):  # checked here too for direct construction
            choices = typing.get_args(typing.get_type_hints(MaskingConfig)[name])
            if getattr(self, name) not in choices:
                raise WWMError(f"masking.{name} must be one of {choices}; got {getattr(self, name)!r}")
        if self.max_predictions is not None and (
            isinstance(self.max_predictions, bool)
            or not isinstance(self.max_predictions, int)
            or self.max_predictions < 1
        ):
            raise WWMError(
                f"masking.max_predictions must be an integer >= 1, or null for no cap; got {self.max_predictions!r}"
            )
        if isinstance(self.max_ngram, bool) or not isinstance(self.max_ngram, int) or self.max_ngram < 1:
            raise WWMError(f"masking.max_ngram must be an integer >= 1; got {self.max_ngram!r}")
        if self.ngram_probs is not None:
            probs = tuple(float(p) for p in self.ngram_probs)
            if len(probs) != self.max_ngram:
                raise WWMError(
                    f"masking.ngram_probs needs one probability per span length 1..{self.max_ngram}; "
                    f"got {len(probs)} values"
                )
            if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
                raise WWMError(f"masking.ngram_probs must be non-negative and sum to 1; got {list(probs)}")
            object.__setattr__(self, "ngram_probs", probs)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise WWMError(f"masking.seed must be an integer in [0, 2^64); got {self.seed!r}")

    @property
    def span_probs(self) -> tuple[float, ...]:
        return self.ngram_probs or _default_ngram_probs(self.max_ngram)


# --------------------------------------------------------------------------------------------------
# The trainers (wwm_jax, wwm_torch)
# --------------------------------------------------------------------------------------------------


def ModelConfig(type: str = "bert", modernbert: Any = None, **fields: Any) -> ModelSection:
    """The `model:` section of family `type` (`BertModelConfig`, `ModernBertModelConfig`: see wwm.families)
    from keyword fields, e.g. `ModelConfig(type="modernbert", hidden_size=64, local_attention=32)`: what
    `ModelConfig(...)` built when one class held every family. `modernbert=ModernBertFields(...)` is the old
    spelling of the ModernBERT fields (one deprecation line; other families ignore it, as before)."""
    section = family(type).section
    if modernbert is not None and section is ModernBertModelConfig:
        warnings.warn(
            "ModelConfig(modernbert=ModernBertFields(...)) is deprecated: pass its fields to ModelConfig "
            "(ModelConfig(type='modernbert', local_attention=...))",
            WWMWarning,
            stacklevel=2,
        )
        fields = {**{f.name: getattr(modernbert, f.name) for f in dataclasses.fields(modernbert)}, **fields}
    return section(type=type, **fields)


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer (no weight decay on LayerNorm weights and biases), warmup then decay, clipping.

    name: adamw (torch.optim.AdamW; optax.adamw) or stable_adamw (ModernBERT's StableAdamW: AdamW whose
    learning rate is divided, per tensor, by max(1, RMS(g / sqrt(v_hat))), Adafactor-style update clipping;
    torch-optimi's StableAdamW, a JAX optax chain equal to it; docs/models.md "StableAdamW").
    decouple_lr (stable_adamw only): "fully decoupled" weight decay, p *= 1 - (lr_t / learning_rate) *
    weight_decay (ModernBERT's recipe, Loshchilov & Hutter), instead of p *= 1 - lr_t * weight_decay.
    schedule (after the linear warmup): linear / cosine to 0 at train.max_steps, constant, or wsd
    (warmup-stable-decay, "trapezoidal"): the peak rate until the last `decay_steps` updates, which
    decay to 0 with `decay_shape` (1-sqrt: ModernBERT's, 1 - sqrt(progress); linear: 1 - progress).
    """

    name: Literal["adamw", "stable_adamw"] = "adamw"
    decouple_lr: bool = False
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 100
    schedule: Literal["linear", "cosine", "constant", "wsd"] = "linear"
    decay_steps: int | None = None  # wsd only: the decay's length; null: 10% of train.max_steps
    decay_shape: Literal["1-sqrt", "linear"] = "1-sqrt"  # wsd only
    max_grad_norm: float | None = 1.0  # null: no clipping

    def __post_init__(self) -> None:
        _positive("optim.learning_rate", self.learning_rate)
        _positive("optim.max_grad_norm", self.max_grad_norm, allow_none=True)
        _positive("optim.decay_steps", self.decay_steps, allow_none=True)
        if self.warmup_steps < 0:
            raise WWMError(f"optim.warmup_steps must be >= 0; got {self.warmup_steps}")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise WWMError(f"optim.beta1/beta2 must be in [0, 1); got {self.beta1}, {self.beta2}")
        if self.decouple_lr and self.name != "stable_adamw":
            raise WWMError(
                f"optim.decouple_lr applies to optim.name stable_adamw only (got name {self.name!r}); "
                "set optim.name: stable_adamw, or remove decouple_lr"
            )

    def wsd_decay_steps(self, max_steps: int) -> int:
        """The decay length of schedule wsd over `max_steps` updates (the one rule both trainers use)."""
        decay = self.decay_steps if self.decay_steps is not None else max(1, max_steps // 10)
        if self.warmup_steps + decay > max_steps:
            raise WWMError(
                f"optim.warmup_steps ({self.warmup_steps}) + optim.decay_steps ({decay}) exceed "
                f"train.max_steps ({max_steps}); shorten the warmup or the decay"
            )
        return decay


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
    # One attention switch for both trainers, one meaning per name (the table: wwm/attention.py,
    # docs/models.md "Attention kernels"): auto (JAX eager / torch sdpa), eager (the parity reference),
    # flash (O(L) memory, both), sdpa (torch), xla, cudnn (NVIDIA GPU), splash (TPU) (JAX),
    # flash_attention_2 (torch, flash-attn on CUDA); blockwise is flash's old name.
    attn_implementation: Literal[
        "auto", "eager", "flash", "sdpa", "xla", "cudnn", "splash", "flash_attention_2", "blockwise"
    ] = "auto"

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
    # JAX with a gs:// output_dir: orbax writes each checkpoint into the bucket itself (true), or saves it
    # in the local staging folder and wwm mirrors it to the bucket (false: the s3:// path, for a host whose
    # TensorStore cannot reach the endpoint gcsfs reaches). Ignored elsewhere. docs/scale.md.
    gcs_direct: bool = True

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


TRACKERS = ("tensorboard", "wandb", "mlflow")


@dataclass(frozen=True)
class LoggingConfig:
    """Where metrics go. `report_to`: experiment trackers, each with the keys of wwm.metrics_schema:
    tensorboard (<output_dir>/tensorboard), wandb (offline with WANDB_MODE=offline; files in
    <output_dir>/wandb), mlflow (MLFLOW_TRACKING_URI, else a local store in <output_dir>/mlruns).
    docs/run_directories.md, "Experiment trackers"."""

    jsonl: bool = True  # <output_dir>/metrics.jsonl (always every step)
    report_to: tuple[Literal["tensorboard", "wandb", "mlflow"], ...] = ("tensorboard",)
    tensorboard: bool | None = None  # the older spelling: true/false adds/removes tensorboard in report_to
    progress_bar: bool = True
    peak_flops_per_device: float | None = None  # for MFU; null: from the table of known chips
    project: str = "wwm"  # the wandb project / MLflow experiment name

    def __post_init__(self) -> None:
        report = list(dict.fromkeys(self.report_to))
        for name in report:
            if name not in TRACKERS:
                raise WWMError(
                    f"logging.report_to: unknown tracker {name!r}; use any of {', '.join(TRACKERS)}"
                )
        if self.tensorboard is not None:
            report = [n for n in report if n != "tensorboard"] + (["tensorboard"] if self.tensorboard else [])
            object.__setattr__(self, "tensorboard", None)
        object.__setattr__(self, "report_to", tuple(report))
        _positive("logging.peak_flops_per_device", self.peak_flops_per_device, allow_none=True)


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


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs. Add a section as one more field (a dataclass with defaults)."""

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    # The trainers' sections, shared by the JAX and the PyTorch trainer. `model`: the section of the family
    # model.type names (wwm.families).
    model: ModelSection = field(default_factory=BertModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    seed: int = 0
    # "{framework}" is replaced by train.framework when the config is built (`--framework torch` too),
    # so that the shipped configs give each trainer its own run directory.
    output_dir: str = path_field("runs/wwm-{framework}")

    def __post_init__(self) -> None:
        if "{framework}" in self.output_dir:
            object.__setattr__(
                self, "output_dir", self.output_dir.replace("{framework}", self.train.framework)
            )
        if "{" in self.output_dir or "}" in self.output_dir:
            raise WWMError(
                f"output_dir {self.output_dir!r} holds a placeholder other than {{framework}}; "
                "write the folder name out"
            )
        if self.data.order == "groups":  # K must divide B and r = B / K divide G: refused here, in one line
            from wwm.data.order import groups_rule

            groups_rule(
                self.data.order_group_rows, self.data.order_window_groups, self.train.global_batch_size
            )
        if not self.model.pretrained:
            self.model.check_positions(self.data.max_seq_len)
        if self.optim.schedule == "wsd":  # before any data preparation, not after the tokenizer is trained
            self.optim.wsd_decay_steps(self.train.max_steps)
        if self.data.packing == "packed_documents" and not family(self.model.type).packs_documents:
            raise WWMError(
                f"data.packing packed_documents is not wired for model.type {self.model.type} yet (transformers' "
                f"{family(self.model.type).label} needs its unpadded varlen form); use data.packing "
                "full_sentences or doc_per_block"
            )
