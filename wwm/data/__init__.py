"""The data pipeline: raw text -> packed, word-aligned blocks -> batches for both trainers.

    from wwm.config import load_config
    from wwm.data import prepare_dataset, BatchIterator, DataPosition

    prepared = prepare_dataset(load_config("configs/tiny.yaml"))
    batches = BatchIterator(prepared.train, 256, seed=0, host_index=0, host_count=1)

Importing this package imports numpy (and pyyaml, through wwm.config) only; `datasets`, `pyarrow`, `transformers` load when used.
docs/data.md describes the design (storage, example ids, order and sharding, packing, cache, streaming).
"""

from wwm.data.loader import BatchIterator, DataPosition, masked_batches, validation_batches
from wwm.data.order import check_batch_layout, device_rows, epoch_order, host_rows
from wwm.data.packing import Blocks, Packer, PackStats, SpecialIds
from wwm.data.pipeline import (
    PreparedData,
    PrepareStats,
    StreamingBlocks,
    format_summary,
    has_validation,
    prepare_dataset,
    validation_mask,
)
from wwm.data.storage import BlockDataset

__all__ = [
    "BatchIterator",
    "BlockDataset",
    "Blocks",
    "DataPosition",
    "PackStats",
    "Packer",
    "PrepareStats",
    "PreparedData",
    "SpecialIds",
    "StreamingBlocks",
    "check_batch_layout",
    "device_rows",
    "epoch_order",
    "format_summary",
    "has_validation",
    "host_rows",
    "masked_batches",
    "prepare_dataset",
    "validation_batches",
    "validation_mask",
]
