"""The run configuration: every section (`sections.py`) and the YAML reader with dotted overrides
(`loader.py`). One YAML file drives both trainers; README's "Run configs" lists the keys.

    from wwm.config import load_config
    config = load_config("configs/tiny.yaml", ["train.max_steps=100"])
"""

from wwm.config.loader import (
    apply_overrides,
    config_to_dict,
    from_dict,
    load_config,
    parse_overrides,
    resolved_dict,
    save_config,
)
from wwm.config.sections import (
    BertModelConfig,
    CheckpointConfig,
    DataConfig,
    DistributedConfig,
    EvalConfig,
    LoggingConfig,
    MaskingConfig,
    MeshConfig,
    ModelConfig,
    ModelSection,
    ModernBertModelConfig,
    OptimConfig,
    ParallelConfig,
    RunConfig,
    TokenizerConfig,
    TokenizerTrainConfig,
    TrainConfig,
    path_field,
)

__all__ = [
    "BertModelConfig",
    "CheckpointConfig",
    "DataConfig",
    "DistributedConfig",
    "EvalConfig",
    "LoggingConfig",
    "MaskingConfig",
    "MeshConfig",
    "ModelConfig",
    "ModelSection",
    "ModernBertModelConfig",
    "OptimConfig",
    "ParallelConfig",
    "RunConfig",
    "TokenizerConfig",
    "TokenizerTrainConfig",
    "TrainConfig",
    "apply_overrides",
    "config_to_dict",
    "from_dict",
    "load_config",
    "parse_overrides",
    "path_field",
    "resolved_dict",
    "save_config",
]
