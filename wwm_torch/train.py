"""`wwm train --framework torch`: the Hugging Face Trainer on the JAX path's batches and loss.

    run(load_config("configs/tiny.yaml")) -> 0

Launch on several processes with torchrun (docs/torch_trainer.md); each process runs `run(config)`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wwm.config import RunConfig


def build_trainer(
    config: RunConfig,
    prepared: Any = None,
    *,
    on_batch: Any = None,
    masked_head: bool = True,
    order_rule: str | None = None,
):
    """(trainer, args, prepared): everything `run` trains with, for tests, benchmarks and custom scripts.
    `on_batch`, `masked_head`: see `WWMTrainer`. `order_rule`: the run's epoch order (`RunDir.order_rule`;
    None: this wwm's rule for new runs)."""
    from transformers import set_seed
    from transformers.trainer_utils import IntervalStrategy

    from wwm.data import has_validation
    from wwm_torch.callbacks import MetricsCallback, install_printing
    from wwm_torch.collator import WholeWordMaskingCollator
    from wwm_torch.data import GlobalBatchDataset, ValidationDataset
    from wwm_torch.model import build_model
    from wwm_torch.optim import optimizer_cls_and_kwargs
    from wwm_torch.trainer import WWMTrainer, training_arguments

    c = config
    has_eval = prepared.validation is not None if prepared is not None else has_validation(c.data)
    args = training_arguments(c, has_eval=has_eval)
    if prepared is None:
        prepared = _prepare(config, args)
    if prepared.validation is None and args.eval_strategy != IntervalStrategy.NO:
        args.eval_strategy = IntervalStrategy.NO
    tokenizer = prepared.tokenizer
    set_seed(c.seed)
    model = build_model(c.model, tokenizer, c.data.max_seq_len, c.train.attn_implementation, seed=c.seed)
    collator = WholeWordMaskingCollator(tokenizer, c.masking, return_example_ids=True)
    train_dataset = GlobalBatchDataset(
        prepared.train, c.train.global_batch_size, c.seed, c.train.max_steps, order_rule=order_rule
    )
    eval_dataset = None
    if prepared.validation is not None:
        eval_batch = c.eval.batch_size or c.train.global_batch_size
        limit = c.eval.max_batches * eval_batch if c.eval.max_batches else None
        eval_dataset = ValidationDataset(prepared.validation, limit)
    trainer = WWMTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        on_batch=on_batch,
        masked_head=masked_head,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(c.optim),  # None: the Trainer's AdamW
    )
    trainer.add_callback(
        MetricsCallback(
            trainer,
            c.output_dir,
            jsonl=c.logging.jsonl,
            tensorboard="tensorboard" in c.logging.report_to,
            log_every_steps=c.train.log_every_steps,
            peak_flops=c.logging.peak_flops_per_device,
        )
    )
    install_printing(trainer, c.train.log_every_steps, c.logging.progress_bar)
    return trainer, args, prepared


def _prepare(config: Any, args: Any) -> Any:
    """The data: on several ranks each prepares its share of the segments, then all read all of them
    (docs/data.md, "Segments"; data.cache_dir shared by the hosts); no rank prepares the whole corpus."""
    from wwm.data import prepare_dataset

    progress = args.process_index == 0 and config.logging.progress_bar
    if args.world_size <= 1:
        return prepare_dataset(config, progress=progress)
    import torch.distributed as dist

    prepared = prepare_dataset(config, progress=progress, share=(args.process_index, args.world_size),
                               barrier=lambda name: dist.barrier())  # fmt: skip
    if config.data.streaming and args.process_index == 0:
        print(f"wwm: data.streaming on {args.world_size} ranks: each reads and tokenizes the whole stream and "
              "keeps its rows (the batches are the one-rank ones); to split that work, prepare the data instead "
              "(wwm prepare --worker i/n, or streaming: false)", flush=True)  # fmt: skip
    return prepared


def run(
    config: RunConfig,
    *,
    prepared: Any = None,
    callbacks: tuple = (),
    overwrite: bool = False,
    allow_changes: bool = False,
    restart: bool = False,
    on_batch: Any = None,
) -> int:
    """Check and claim the run directory, train (or resume from the newest intact checkpoint), export
    `<output_dir>/hf`, return the exit status (0; after SIGTERM 0, after Ctrl-C 130, with a checkpoint).

    `prepared`: the data (`wwm.data.PreparedData` or any object with train, validation, tokenizer);
    None runs `prepare_dataset(config)`. `callbacks`: extra TrainerCallbacks. `overwrite` /
    `allow_changes` / `restart`: replace the run in output_dir / resume it under changed settings / train
    it again from step 0 keeping its history (wwm.rundir). `on_batch(step, rows)`: see `WWMTrainer` (the JAX trainer's hook of the same name).
    """
    from wwm.preflight import local_inputs, start_run
    from wwm.signals import Stopped, StopRequest

    lead = int(os.environ.get("RANK", "0")) == 0
    with StopRequest("wwm train", immediate=True) as stop:  # switched to saving first when training begins
        try:
            share = _share_from_rank0()
            node, nodes, node_writer = _node()
            run_dir = start_run(config, "torch", overwrite=overwrite, allow_changes=allow_changes,
                                restart=restart, lead=lead, share=share, process=(node, nodes),
                                writer=node_writer)  # fmt: skip
            if share is not None and "://" in config.output_dir:
                import torch.distributed as dist

                dist.barrier()  # each node's checkpoints pulled before any of its ranks reads them
            with run_dir:  # the lock is released however the run ends
                return _run(local_inputs(config, run_dir), prepared, callbacks, on_batch, run_dir, lead, stop,
                            node_disks="://" in config.output_dir)  # fmt: skip
        except Stopped as stopped:
            if lead:
                print(stopped.message(), file=sys.stderr, flush=True)
            return stopped.exit_status


def _share_from_rank0():
    """With several ranks (torchrun), the process group, started here (the Trainer then uses it), and a
    broadcast from rank 0: rank 0 alone takes the run's lock and decides; every rank gets the outcome."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")

    def share(value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    return share


def _node() -> tuple[int, int, bool]:
    """(this node, the node count, whether this rank is its node's local rank 0) from torchrun's
    environment: with a bucket output_dir each node has its own staging folder on its own disk, which its
    local rank 0 fills and mirrors (wwm.runstore)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    node = int(os.environ.get("GROUP_RANK", "0"))
    return node, max(1, world // max(1, per_node)), int(os.environ.get("LOCAL_RANK", "0")) == 0


def _run(config: RunConfig, prepared: Any, callbacks: tuple, on_batch: Any, run_dir: Any, lead: bool, stop: Any,
         *, node_disks: bool = False) -> int:  # fmt: skip
    """The experiment trackers' runs around the training (the Trainer's integrations log into them)."""
    from wwm.trackers import EXTERNAL, Trackers

    _quiet_progress(config.logging.progress_bar)
    trackers = None
    if lead and any(n in EXTERNAL for n in config.logging.report_to):
        trackers = Trackers(config, run_dir).start()
    try:
        status = _train(config, prepared, callbacks, on_batch, run_dir, lead, stop, node_disks=node_disks)
    except BaseException:
        if trackers is not None:
            trackers.close("failed")
        raise
    if trackers is not None:
        trackers.close("done" if status == 0 else "stopped")
    return status


def _train(config: RunConfig, prepared: Any, callbacks: tuple, on_batch: Any, run_dir: Any, lead: bool,
           stop: Any, *, node_disks: bool = False) -> int:  # fmt: skip
    from wwm.data.tokenizer import tokenizer_fingerprint
    from wwm_torch.callbacks import MetricsCallback, StopCallback
    from wwm_torch.checkpoints import newest_intact_checkpoint, remove_incomplete_checkpoints

    trainer, args, prepared = build_trainer(
        config, prepared, on_batch=on_batch, order_rule=run_dir.order_rule
    )
    cache_path = getattr(prepared, "cache_path", None)
    run_dir.prepared(
        tokenizer_fingerprint(prepared.tokenizer), os.path.basename(cache_path) if cache_path else None
    )
    for callback in callbacks:
        trainer.add_callback(callback)
    # A bucket output_dir: each node saves into its own staging folder (wwm.runstore), so each node's local
    # rank 0 renames its ranks' part of a checkpoint into place, not only the world main process.
    trainer.node_disks = node_disks
    if lead:
        for text in run_dir.messages:
            print(f"wwm: {text}", flush=True)
        remove_incomplete_checkpoints(args.output_dir)
    resume_from = (
        newest_intact_checkpoint(args.output_dir, trainer.model, lead=lead) if run_dir.resume else None
    )
    _same_checkpoint_everywhere(resume_from, args.world_size)
    if lead:
        print(_announcement(config, trainer, args, prepared, resume_from), flush=True)
    metrics = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MetricsCallback))
    start = time.perf_counter()
    stopper = StopCallback(stop, run_dir)
    trainer.add_callback(stopper)
    stop.immediate = False  # from here on a signal saves the step in flight, then stops
    try:
        with _tied_keys_quiet(trainer.model):
            trainer.train(resume_from_checkpoint=resume_from)
    finally:
        metrics.close()
    if stopper.stopped_at is not None:
        if lead:
            print(f"wwm torch: {stop.name}: saved step {stopper.stopped_at} to {args.output_dir}; exiting "
                  "(run the same command to resume)", flush=True)  # fmt: skip
        _close_process_group(run_dir)
        return stop.exit_status
    export = (
        export_hf(trainer, os.path.join(config.output_dir, "hf"), lead)
        if config.checkpoint.export_hf_at_end
        else None
    )
    if lead:
        print(_summary(metrics, time.perf_counter() - start, args.output_dir, export), flush=True)
    _close_process_group(run_dir)
    return 0


def _same_checkpoint_everywhere(resume_from: str | None, world_size: int) -> None:
    """Every rank must resume from the same step: each reads its own node's folder (a bucket output_dir:
    each node's staging folder, wwm.runstore), and ranks resuming different steps would train on mixed
    states or wait on each other's collectives forever. One line on every rank otherwise."""
    if world_size <= 1:
        return
    import torch.distributed as dist

    from wwm.errors import WWMError

    chosen: list[Any] = [None] * world_size
    dist.all_gather_object(chosen, os.path.basename(resume_from) if resume_from else None)
    if len(set(chosen)) > 1:
        raise WWMError(f"the ranks found different checkpoints to resume from ({', '.join(map(str, chosen))}, by "
                       "rank): a node's copy is missing or unreadable; check each node's output folder (a bucket "
                       "output_dir: remove the nodes' staging folders and run the same command to pull again)")  # fmt: skip


def _quiet_progress(progress_bar: bool) -> None:
    """`logging.progress_bar: false` also silences transformers' own bars (loading weights, writing model
    shards), not only the training bar."""
    from transformers.utils import logging as hf_logging

    if progress_bar:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()


@contextlib.contextmanager
def _tied_keys_quiet(model: Any):
    """On resume the Trainer loads a checkpoint's model.safetensors, which holds no tied decoder weights
    (they are the embeddings), and warns "There were missing keys ... decoder"; only that warning, and only
    when every missing key is a tied one, is held back."""
    import logging

    tied = set()
    with contextlib.suppress(Exception):
        tied = set(getattr(model, "all_tied_weights_keys", {}) or {}) | {
            k for k in model.state_dict() if k.endswith(("decoder.weight", "decoder.bias"))
        }

    class Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            text = record.getMessage()
            if "missing keys in the checkpoint" not in text:
                return True
            names = set(re.findall(r"'([^']+)'", text))
            return not names or not names <= tied

    logger = logging.getLogger("transformers.trainer")
    quiet = Filter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _announcement(config: RunConfig, trainer: Any, args: Any, prepared: Any, resume_from: str | None) -> str:
    n_params = sum(p.numel() for p in trainer.model.parameters())
    blocks = len(prepared.train) if hasattr(prepared.train, "__len__") else "streamed"
    return (
        f"wwm torch: {type(trainer.model).__name__} with {n_params / 1e6:.2f}M parameters, {blocks} training "
        f"blocks, global batch {config.train.global_batch_size} = {args.world_size} process(es) x "
        f"{args.per_device_train_batch_size} x {args.gradient_accumulation_steps} accumulation, "
        f"{config.train.max_steps} steps, "
        + (
            f"resuming from {resume_from}"
            if resume_from
            else f"from model.pretrained {config.model.pretrained}"
            if config.model.pretrained
            else "from scratch (fresh weights)"
        )
    )


def export_hf(trainer: Any, out_dir: str, lead: bool) -> str:
    """The Hugging Face export (model + tokenizer; the main process writes): safetensors weights, config and
    tokenizer only (no training_args.bin, a pickle), the tokenizer's model_max_length set to the model's
    usable positions, ordinary file modes; written into a temporary folder and renamed into place, so a
    kill or a full disk never leaves a half-written export under its name."""
    import shutil

    from wwm.files import normalize_permissions
    from wwm.preflight import usable_positions

    out_dir = os.path.abspath(out_dir)
    if not lead:
        return out_dir
    tokenizer = trainer.processing_class
    previous = tokenizer.model_max_length
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.model_max_length = usable_positions(trainer.model.config.to_dict())
    try:
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        normalize_permissions(tmp)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)  # the previous export (a resumed run exports again)
        os.replace(tmp, out_dir)
    finally:
        tokenizer.model_max_length = previous
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _close_process_group(run_dir: Any = None) -> None:
    """Tear the process group down before the interpreter does: left to interpreter shutdown, gloo's
    threads can abort the process ("terminate called without an active exception") after a good run.
    A bucket output_dir: every node's checkpoint uploads finish before the barrier, so that rank 0 then
    publishes and releases the lease only once every node's part of the last checkpoint is up."""
    import torch.distributed as dist

    mirror = getattr(getattr(run_dir, "store", None), "mirror", None)
    if mirror is not None:
        mirror.wait()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _summary(metrics: Any, seconds: float, checkpoint_dir: str, export: str | None) -> str:
    records = metrics.records
    lines = [f"wwm torch: done in {seconds:.1f}s"]
    if records:
        first, last = records[0], records[-1]
        lines.append(
            f"  steps {first['step']}..{last['step']}: loss {first['loss']:.4f} -> {last['loss']:.4f}"
        )
        timed = records[1:] or records  # the first step warms up
        tokens = sum(r["tokens_per_s"] * r["step_time_s"] for r in timed)
        lines.append(f"  {tokens / sum(r['step_time_s'] for r in timed):,.0f} tokens/s")
    if metrics.last_eval:
        e = metrics.last_eval
        lines.append(
            f"  eval at step {e['step']}: loss {e['eval_loss']:.4f}, accuracy {e['eval_accuracy']:.4f}, "
            f"perplexity {e['eval_perplexity']:.2f}"
        )
    lines.append(f"  checkpoints: {checkpoint_dir}")
    if export:
        lines.append(f"  Hugging Face export (model + tokenizer): {export}")
    return "\n".join(lines)


__all__ = ["build_trainer", "export_hf", "run"]
