"""Devices, meshes and shardings: the (data, fsdp, tensor) mesh, parameter shardings from the models'
logical axis names, and global batch arrays built from each host's own rows.

One mesh serves every mode:
* `sharded`: jit over the mesh; a parameter dimension named `embed` goes to the mesh axis that
  `parallel.rules` gives it (default fsdp), `vocab`/`heads`/`mlp` to tensor, and so on. The batch is
  split over data x fsdp (FSDP is data parallel with sharded parameters).
* `pmap`: a 1-D data-parallel mesh (every device on `data`), parameters replicated; the step runs under
  `shard_map` with explicit psums.
* `single`: a 1x1x1 mesh of the first device (one process only).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wwm.config import DistributedConfig, ParallelConfig
from wwm.errors import WWMError

logger = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the mesh axes a batch's rows are split over

# Environment variables that mean "this is one process of several" (SLURM, Open MPI, torchrun-style
# launchers, TPU pods). jax.distributed.initialize() reads the details itself.
_MULTIPROCESS_ENV = (
    "SLURM_NTASKS",
    "OMPI_COMM_WORLD_SIZE",
    "JAX_COORDINATOR_ADDRESS",
    "TPU_WORKER_HOSTNAMES",
)


def _env_says_multiprocess() -> bool:
    for name in _MULTIPROCESS_ENV:
        value = os.environ.get(name)
        if value and not (name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE") and value == "1"):
            if name == "TPU_WORKER_HOSTNAMES" and "," not in value:
                continue  # a single-host TPU VM lists only itself
            return True
    return False


def initialize_distributed(config: DistributedConfig) -> bool:
    """Call jax.distributed.initialize when asked to, or (auto) when fields or the environment say there
    are several processes. Must run before anything touches a device. Returns True if initialized."""
    explicit = config.coordinator_address is not None or (config.num_processes or 1) > 1
    if config.initialize == "never" or (
        config.initialize == "auto" and not (explicit or _env_says_multiprocess())
    ):
        return False
    # CPU hosts need a collectives implementation for cross-process psums; ignored by GPU/TPU clients.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {
        k: v
        for k, v in (
            ("coordinator_address", config.coordinator_address),
            ("num_processes", config.num_processes),
            ("process_id", config.process_id),
        )
        if v is not None
    }
    jax.distributed.initialize(**kwargs)  # no arguments: TPU pods / SLURM / Open MPI auto-detection
    logger.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return True


def make_mesh(parallel: ParallelConfig) -> Mesh:
    """The (data, fsdp, tensor) mesh for `parallel.mode` over all devices of all processes."""
    devices = jax.devices()
    n = len(devices)
    if parallel.mode == "single":
        if jax.process_count() > 1:
            raise WWMError(
                "parallel.mode 'single' runs one process; use 'sharded' or 'pmap' on several hosts"
            )
        shape = (1, 1, 1)
        devices = devices[:1]
    elif parallel.mode == "pmap":
        shape = (n, 1, 1)
    else:
        sizes = [parallel.mesh.data, parallel.mesh.fsdp, parallel.mesh.tensor]
        if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
            raise WWMError(f"parallel.mesh: sizes must be >= 1 with at most one -1; got {sizes}")
        known = int(np.prod([s for s in sizes if s != -1]))
        if -1 in sizes:
            if n % known:
                raise WWMError(f"parallel.mesh {sizes}: {n} devices are not divisible by {known}")
            sizes[sizes.index(-1)] = n // known
        if int(np.prod(sizes)) != n:
            raise WWMError(
                f"parallel.mesh data*fsdp*tensor = {int(np.prod(sizes))} but there are {n} devices; "
                "set one axis to -1 to take the rest"
            )
        shape = tuple(sizes)
    # Auto axes: jit and shard_map place collectives; make_mesh orders devices so that each process's
    # devices are contiguous along the mesh (checked for the batch in `host_share`).
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _rule_table(rules) -> dict[str, str | None]:
    table = dict(rules)
    for axis in table.values():
        if axis is not None and axis not in MESH_AXES:
            raise WWMError(f"parallel.rules maps to mesh axis {axis!r}; the mesh axes are {MESH_AXES}")
    return table


def param_specs(axes: Any, shapes: Any, mesh: Mesh, rules, mode: str) -> Any:
    """PartitionSpecs for the parameters from their logical axis names (`modeling.logical_axes`).

    A mesh axis is used at most once per parameter, and a dimension its mesh axis does not divide is
    replicated (with a log line) rather than refused, so odd vocabulary sizes still run.
    """
    if mode != "sharded":
        return jax.tree.map(lambda _: P(), axes, is_leaf=lambda x: isinstance(x, tuple))
    table = _rule_table(rules)

    def spec(names: tuple, shape) -> P:
        used, out = set(), []
        for name, dim in zip(names, shape.shape, strict=True):
            if name is not None and name not in table:
                raise WWMError(
                    f"parallel.rules has no rule for the logical axis {name!r}; add [{name}, null]"
                )
            axis = table.get(name) if name is not None else None
            if axis is not None and (axis in used or dim % mesh.shape[axis]):
                if axis not in used:
                    logger.info("axis %s (size %d) not divisible by mesh %s=%d: replicated", name, dim, axis,
                                mesh.shape[axis])  # fmt: skip
                axis = None
            if axis is not None and mesh.shape[axis] == 1:
                axis = None  # keeps specs readable; a size-1 axis shards nothing
            used.add(axis)
            out.append(axis)
        return P(*out)

    return jax.tree.map(spec, axes, shapes, is_leaf=lambda x: isinstance(x, tuple))


def named(mesh: Mesh, specs: Any) -> Any:
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, ndim: int, row_axis: int) -> NamedSharding:
    """Rows (dimension `row_axis`) split over data x fsdp; everything else replicated."""
    spec = [None] * ndim
    spec[row_axis] = BATCH_AXES
    return NamedSharding(mesh, P(*spec))


def host_share(mesh: Mesh, global_rows: int) -> tuple[int, int]:
    """(host_index, host_count) for the BatchIterator: which contiguous block of the global batch this
    process's devices hold. Every process must hold one distinct contiguous block, in process order."""
    sharding = batch_sharding(mesh, 1, 0)
    index_map = sharding.addressable_devices_indices_map((global_rows,))
    starts = sorted({idx[0].start or 0 for idx in index_map.values()})
    stops = sorted({idx[0].stop if idx[0].stop is not None else global_rows for idx in index_map.values()})
    lo, hi = starts[0], stops[-1]
    count = jax.process_count()
    if hi - lo != global_rows // count or lo != jax.process_index() * (global_rows // count):
        raise WWMError(
            f"process {jax.process_index()} holds batch rows [{lo}, {hi}) of {global_rows}, not its own "
            f"contiguous 1/{count}; a mesh whose data/fsdp axes do not follow process order is unsupported"
        )
    return jax.process_index(), count


def global_arrays(local: dict[str, np.ndarray], mesh: Mesh, row_axis: int) -> dict[str, jax.Array]:
    """This host's rows -> global arrays (rows along `row_axis` concatenated over processes)."""
    out = {}
    for key, value in local.items():
        shape = list(value.shape)
        shape[row_axis] *= jax.process_count()
        sharding = batch_sharding(mesh, value.ndim, row_axis)
        out[key] = jax.make_array_from_process_local_data(sharding, value, tuple(shape))
    return out


def broadcast_json(value: Any) -> Any:
    """Process 0's `value` (JSON-able) on every process: how the run directory's lock and decision, taken
    by process 0 alone, reach the others (wwm.rundir.claim's `share`)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    data = json.dumps(value).encode() if jax.process_index() == 0 else b""
    size = int(multihost_utils.broadcast_one_to_all(np.array(len(data), np.int32)))
    buffer = np.zeros(size, np.uint8)
    buffer[: len(data)] = np.frombuffer(data, np.uint8)
    return json.loads(np.asarray(multihost_utils.broadcast_one_to_all(buffer)).tobytes().decode())
