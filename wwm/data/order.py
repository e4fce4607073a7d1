"""The order of examples: a pure function of (seed, epoch), and the host-slicing rule.

Shuffle order (docs/data.md, "Order and sharding")
    Example i of N gets the key ``k_i = stream_keys(example_keys(seed, epoch, i), ORDER_STREAM)`` of
    ``wwm.rng`` (uint32 hash chains, docs/masking.md section 3); the epoch's order is the example ids sorted
    by (k_i, i). The keys are a bijection of i for N < 2^32, so there are no ties in practice. Nothing
    depends on numpy's random generators, the number of hosts or the framework.

Global batches
    Global batch ``s`` of an epoch is ``order[s*B : (s+1)*B]``; an epoch has ``N // B`` steps (the last,
    incomplete global batch is dropped for training; the next epoch reshuffles everything).

Hosts and devices
    With H hosts (processes) and D devices per host, B must be divisible by H*D. Host h reads rows
    ``[h*B/H, (h+1)*B/H)`` of each global batch, and its device d takes rows ``[d*B/(H*D), (d+1)*B/(H*D))``
    of that slice: device (h, d) holds global rows ``[(h*D + d) * B/(H*D), ...)``, the usual
    process-major layout of jax's ``make_array_from_process_local_data`` and of a torch
    DistributedSampler over contiguous slices. The union over hosts is the single-host global batch, row
    for row.
"""

from __future__ import annotations

import numpy as np

from wwm import rng
from wwm.errors import WWMError

__all__ = [
    "ORDER_STREAM",
    "check_batch_layout",
    "device_rows",
    "epoch_order",
    "global_batch_ids",
    "host_rows",
]

ORDER_STREAM = rng.STREAM_ORDER
BUFFER_STREAM = rng.STREAM_BUFFER


def _check_seed_epoch(seed: int, epoch: int) -> None:
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**64:
            raise WWMError(f"{name} must be an integer in [0, 2^64); got {value!r}")


def order_keys(example_ids: np.ndarray, seed: int, epoch: int, stream: int = ORDER_STREAM) -> np.ndarray:
    """The uint32 sort key of each example id for (seed, epoch)."""
    _check_seed_epoch(seed, epoch)
    ids = np.asarray(example_ids, dtype=np.int64)
    return rng.stream_keys(rng.example_keys(int(seed), int(epoch), ids), stream)


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The example ids 0..N-1 in the shuffled order of ``epoch`` (int64)."""
    keys = order_keys(np.arange(num_examples, dtype=np.int64), seed, epoch)
    return np.argsort(keys, kind="stable").astype(np.int64)


def global_batch_ids(order: np.ndarray, step: int, global_batch_size: int) -> np.ndarray:
    """Example ids of global batch ``step`` (in the epoch whose order is ``order``)."""
    return order[step * global_batch_size : (step + 1) * global_batch_size]


def check_batch_layout(global_batch_size: int, host_count: int = 1, devices_per_host: int = 1) -> None:
    """Raise WWMError unless B > 0 is divisible by host_count * devices_per_host."""
    if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, (int, np.integer)):
        raise WWMError(f"the global batch size must be an integer; got {global_batch_size!r}")
    if host_count < 1 or devices_per_host < 1:
        raise WWMError(f"host_count and devices_per_host must be >= 1; got {host_count}, {devices_per_host}")
    shards = host_count * devices_per_host
    if global_batch_size < 1 or global_batch_size % shards:
        raise WWMError(
            f"the global batch size {global_batch_size} must be a positive multiple of hosts x devices "
            f"({host_count} x {devices_per_host} = {shards}); choose e.g. {max(1, global_batch_size // shards) * shards}"
        )


def host_rows(global_batch_size: int, host_index: int, host_count: int) -> slice:
    """Rows of each global batch that host ``host_index`` of ``host_count`` reads."""
    check_batch_layout(global_batch_size, host_count)
    if not 0 <= host_index < host_count:
        raise WWMError(f"host_index must be in [0, {host_count}); got {host_index}")
    per_host = global_batch_size // host_count
    return slice(host_index * per_host, (host_index + 1) * per_host)


def device_rows(
    global_batch_size: int, host_index: int, host_count: int, device: int, devices_per_host: int
) -> slice:
    """Rows of the global batch that local device ``device`` of host ``host_index`` holds."""
    check_batch_layout(global_batch_size, host_count, devices_per_host)
    if not 0 <= device < devices_per_host:
        raise WWMError(f"device must be in [0, {devices_per_host}); got {device}")
    per_device = global_batch_size // (host_count * devices_per_host)
    first = (host_index * devices_per_host + device) * per_device
    return slice(first, first + per_device)
