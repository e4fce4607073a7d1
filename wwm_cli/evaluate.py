"""Evaluate any checkpoint in either framework, or both on the same masked batches (`wwm eval`,
`wwm fill-mask`).

A model PATH is resolved to one Hugging Face directory that both frameworks load
(`resolve_model`): an HF directory as it is; a torch run directory's newest complete
`checkpoints/checkpoint-<step>/` (else its `hf/` export); a JAX run directory's newest orbax checkpoint,
restored with the model built from the run's recorded config and written to a temporary HF directory
by the trainer's own export (else its `hf/`). A bucket URL: an HF directory through a local copy, a
bucket run through a local view of its record, tokenizer and newest complete checkpoint (`_local_run_view`).
JAX loads it with `wwm_jax.convert.load_hf`, torch with
`AutoModelForMaskedLM.from_pretrained(..., use_safetensors=True)`.

The validation batches are made once (the config's validation split, tokenized with the model's
tokenizer, the fixed epoch-0 masks of `wwm.data.validation_batches`) and fed to both: JAX through the
trainer's `eval_step` / `eval_sums`, torch through `masked_lm_sums` with the MLM head at the masked rows
(`head_at_rows`), as in `WWMTrainer.evaluate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np

from wwm.errors import WWMError
from wwm.masking import IGNORE_INDEX
from wwm.mlm_eval import UnigramBaseline, mlm_metrics, token_counts

if TYPE_CHECKING:
    from wwm.config import MaskingConfig, RunConfig

FRAMEWORKS = ("jax", "torch")
TOLERANCE = 1e-5  # relative loss difference of the two frameworks, fp32 with highest matmul precision


@dataclasses.dataclass
class ModelSource:
    hf_dir: str  # config.json + safetensors weights (+ tokenizer when known)
    tokenizer_dir: str
    description: str  # what PATH turned out to be, for the report


# ---------------------------------------------------------------------------------------------- model
def _has_weights(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        name.endswith(".safetensors") for name in os.listdir(path)
    )


def _has_tokenizer(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json"))


def _tokenizer_of_hf(path: str, fallback: str | None = None) -> str:
    if _has_tokenizer(path):
        return path
    if fallback is not None:
        return fallback
    raise WWMError(f"{path} holds no tokenizer (tokenizer.json); save the model's tokenizer into it")


def _run_tokenizer(run: str, config: RunConfig) -> str:
    """A run's tokenizer: <run>/tokenizer when it trained one, else its config's tokenizer.path."""
    trained = os.path.join(run, "tokenizer")
    if os.path.isdir(trained):
        return trained
    if config.tokenizer.path:
        return config.tokenizer.path
    raise WWMError(f"run {run} has no tokenizer/ folder and its config names no tokenizer.path")


def _local_model(path: str) -> str:
    from wwm import fs

    if not fs.is_remote(path):
        return path
    with fs.errors(path, "read --model"):
        if fs.isfile(fs.join(path, "config.json")):
            return fs.fetch(path)
        if fs.isfile(fs.join(path, "run.json")):
            return _local_run_view(path)
    raise WWMError(
        f"--model {path} holds no Hugging Face directory (config.json) and no run (run.json); give the bucket "
        "folder of a model or of a run"
    )


def _local_run_view(url: str) -> str:
    """A local folder that reads as the bucket run ``url`` does for evaluation: its run.json, config.yaml,
    tokenizer/, and its newest *complete* checkpoint (every commit marker there, wwm.fs.mirror), else its
    hf/ export. Kept per run URL under the local cache (``$WWM_LOCAL_DIR``/eval); a checkpoint already
    pulled is used again, one whose name is gone from the bucket is dropped. The run itself is only read:
    evaluating a run while it trains is safe, and sees the checkpoint complete at that moment."""
    import json
    import shutil

    from wwm import fs, rundir, runstore
    from wwm.files import atomic_write_text
    from wwm.fs import mirror

    view = fs.staging_dir(url, "eval")
    os.makedirs(view, exist_ok=True)
    for name in (rundir.RUN_FILE, rundir.CONFIG_FILE):
        if fs.isfile(fs.join(url, name)):
            fs.copy(fs.join(url, name), os.path.join(view, name))
    for folder in ("tokenizer",):
        if fs.isfile(fs.join(url, folder, "tokenizer.json")) or fs.isfile(fs.join(url, folder, "vocab.txt")):
            mirror.download_folder(fs.join(url, folder), os.path.join(view, folder))
    remote = fs.join(url, rundir.CHECKPOINT_DIR)
    found = (
        [c for c in mirror.candidates([], remote, runstore.step_of) if c.remote] if fs.isdir(remote) else []
    )
    # A checkpoint of several JAX processes is one part per process (<step>/process-<k>/, each restores
    # onto its own process only: docs/scale.md "Several processes"): not read here; the hf/ export is.
    parted = [c.name for c in found if (mirror.writers_of(fs.join(remote, c.name)) or 1) > 1]
    found = [c for c in found if c.name not in parted]
    if parted and not found and not fs.isfile(fs.join(url, "hf", "config.json")):
        raise WWMError(
            f"--model {url}: its checkpoints were saved by several processes, one part each "
            f"({parted[0]}), which a single process does not read; evaluate its hf/ export once the run "
            "has finished (checkpoint.export_hf_at_end: true)"
        )
    local = os.path.join(view, rundir.CHECKPOINT_DIR)
    keep = found[0].name if found else None
    if os.path.isdir(local):
        for name in os.listdir(local):
            if name != keep:
                shutil.rmtree(os.path.join(local, name), ignore_errors=True)
    if keep is not None:
        # The commit markers say which copy of the step this is (a step saved again after a fallback past
        # a corrupt copy has new ones): a copy pulled before is used again only under the same markers.
        there = fs.join(remote, keep)
        markers = sorted(n for n in fs.listdir(there) if n.startswith(mirror.MARKER_PREFIX))
        signature = json.dumps([fs.read_text(fs.join(there, n)) for n in markers])
        record = os.path.join(local, f".{keep}.markers.json")
        same = False
        if os.path.isdir(os.path.join(local, keep)) and os.path.isfile(record):
            with open(record, encoding="utf-8") as f:  # local: the eval view made above
                same = f.read() == signature
        if not same:
            os.makedirs(local, exist_ok=True)
            mirror.pull(remote, keep, local)  # a folder that appears whole or not at all
            atomic_write_text(record, signature)
    elif fs.isfile(fs.join(url, "hf", "config.json")):
        mirror.download_folder(fs.join(url, "hf"), os.path.join(view, "hf"))
    return view


def resolve_model(path: str, stack: contextlib.ExitStack) -> ModelSource:
    """PATH (an HF directory or a run directory of either trainer) -> the HF directory to load.
    Temporary directories (a JAX checkpoint's export) live as long as `stack`. A bucket URL (gs://, s3://,
    hf://) is used through a local copy (wwm.fs.fetch): an HF directory, or a bucket run's hf/ export."""
    path = _local_model(path)
    if not os.path.isdir(path):
        raise WWMError(
            f"--model {path!r} is not a directory; give a Hugging Face model directory or a run directory"
        )
    if _has_weights(path):
        return ModelSource(path, _tokenizer_of_hf(path), f"Hugging Face directory {path}")
    from wwm.config.loader import from_dict
    from wwm.config.sections import RunConfig
    from wwm.rundir import _recorded_framework, read_record

    record, recorded = read_record(path)
    framework = _recorded_framework(path, record, recorded)
    if framework is None or recorded is None:
        raise WWMError(
            f"--model {path!r} is neither a Hugging Face directory (config.json + *.safetensors) nor a run "
            "directory (run.json + config.yaml)"
        )
    config = from_dict(RunConfig, recorded)
    tokenizer = _run_tokenizer(path, config)
    export = os.path.join(path, "hf")
    if framework == "torch":
        from wwm_torch.checkpoints import complete_checkpoints

        found = complete_checkpoints(os.path.join(path, "checkpoints"))
        if found:
            return ModelSource(
                found[-1], _tokenizer_of_hf(found[-1], tokenizer), f"torch run checkpoint {found[-1]}"
            )
    else:
        restored = _export_jax_checkpoint(path, config, tokenizer, stack)
        if restored is not None:
            return restored
    if os.path.isdir(export) and _has_weights(export):
        return ModelSource(export, _tokenizer_of_hf(export, tokenizer), f"{framework} run export {export}")
    raise WWMError(f"run {path} has no checkpoint and no hf/ export yet; train it first")


def _export_jax_checkpoint(run: str, config: RunConfig, tokenizer_dir: str, stack) -> ModelSource | None:
    """The newest orbax checkpoint of a JAX run, restored into the model of the run's config and written
    as an HF directory (the trainer's `export_hf`) in a temporary folder; None when there is none."""
    import jax

    from wwm.data.tokenizer import load_tokenizer
    from wwm_jax import sharding as shd
    from wwm_jax.checkpoint import Checkpointer
    from wwm_jax.optim import make_optimizer
    from wwm_jax.train import export_hf, init_state, make_model

    ckpt = Checkpointer(run, config.checkpoint)
    try:
        if ckpt.latest_step() is None:
            return None
        tokenizer = load_tokenizer(tokenizer_dir)
        hf_config = (
            None
            if config.model.pretrained
            else config.model.hf_config_dict(tokenizer, config.data.max_seq_len)
        )
        model = make_model(
            dataclasses.replace(config, train=dataclasses.replace(config.train, dtype="float32")), hf_config
        )
        tx, _ = make_optimizer(config.optim, config.train.max_steps)
        mesh = shd.make_mesh(dataclasses.replace(config.parallel, mode="sharded"))
        graphdef, state, _ = init_state(model, tx, mesh, config)
        found = ckpt.restore_latest(state)
    finally:
        ckpt.close()
    if found is None:
        return None
    step, state, _ = found
    out = stack.enter_context(tempfile.TemporaryDirectory(prefix="wwm-eval-"))
    export_hf(graphdef, jax.device_get(state.params), out, tokenizer)
    return ModelSource(out, out, f"JAX run checkpoint {ckpt.directory}/{step}")


def _hf_config(hf_dir: str) -> dict[str, Any]:
    import json

    # local: a model folder on this machine (a bucket --model is fetched first)
    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def check_positions(config: RunConfig, hf_dir: str) -> None:
    from wwm.preflight import usable_positions

    positions = usable_positions(_hf_config(hf_dir))
    if config.data.max_seq_len > positions:
        raise WWMError(
            f"data.max_seq_len {config.data.max_seq_len} is longer than the model's {positions} positions; "
            f"evaluate with data.max_seq_len={positions} (or less)"
        )


def check_vocabulary(tokenizer: Any, hf_dir: str) -> None:
    """Refuse a tokenizer with ids the model has no embedding for (a model may have more rows: padded
    vocabularies such as ModernBERT's)."""
    rows = int(_hf_config(hf_dir)["vocab_size"])
    if len(tokenizer) > rows:
        raise WWMError(
            f"the tokenizer has {len(tokenizer)} tokens but the model in {hf_dir} has {rows} token embeddings: "
            "not the model's tokenizer; save the tokenizer it was trained with next to its config.json"
        )


# ---------------------------------------------------------------------------------------------- precision
def highest_precision() -> None:
    """float32 matmuls without TF32 / bf16 passes on both sides (the comparison's tolerance needs it)."""
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    with contextlib.suppress(ImportError):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


# ---------------------------------------------------------------------------------------------- data
def eval_config(config: RunConfig, tokenizer_dir: str) -> RunConfig:
    """The config with the model's tokenizer in place of its own (path, not train)."""
    tok = dataclasses.replace(config.tokenizer, path=os.path.abspath(tokenizer_dir), train=None)
    return dataclasses.replace(config, tokenizer=tok)


def masked_validation_rows(prepared: Any, config: RunConfig) -> list[dict[str, np.ndarray]]:
    """The masked validation batches, (M, L) int32 {"input_ids", "labels", "attention_mask"}: the
    trainers' evaluation batches (fixed epoch-0 masks, eval.batch_size, eval.max_batches)."""
    from wwm_jax.train import masked_host_batches  # numpy only, the trainers' own masking of batches

    size = config.eval.batch_size or config.train.global_batch_size
    batches = prepared.validation_batches(size)
    rows = ({k: v[0] for k, v in r.items()} for r, _, _ in masked_host_batches(batches, prepared.masker(), 1))
    return list(itertools.islice(rows, config.eval.max_batches))


def unigram_baseline(prepared: Any, rows: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """The unigram baseline (wwm.mlm_eval) of the training blocks, scored on the masked tokens of `rows`."""
    train = prepared.train
    if not hasattr(train, "input_ids"):
        raise WWMError("the unigram baseline counts the training blocks, which data.streaming: true does not store; "
                       "set data.streaming: false")  # fmt: skip
    tokenizer = prepared.tokenizer
    n = len(train.input_ids)
    chunks = ((train.input_ids[i : i + 4096], train.lengths[i : i + 4096]) for i in range(0, n, 4096))
    counts = token_counts(chunks, len(tokenizer))
    baseline = UnigramBaseline.from_counts(counts, tokenizer.all_special_ids)
    targets = (
        np.concatenate([r["labels"][r["labels"] != IGNORE_INDEX] for r in rows]) if rows else np.zeros(0)
    )
    return {
        **baseline.score(targets),
        "majority_token": tokenizer.convert_ids_to_tokens(baseline.majority_id),
        "training_tokens": baseline.training_tokens,
    }


# ---------------------------------------------------------------------------------------------- frameworks
def load_jax(hf_dir: str):
    """(graphdef, params) of the HF directory, float32."""
    from flax import nnx

    from wwm_jax import convert

    graphdef, state = nnx.split(convert.load_hf(hf_dir))
    return graphdef, nnx.to_pure_dict(state)


def load_torch(hf_dir: str):
    """The HF masked-LM model, float32, eager attention (the reference implementation), eval mode."""
    import torch
    from transformers import AutoModelForMaskedLM

    try:
        model = AutoModelForMaskedLM.from_pretrained(
            hf_dir, use_safetensors=True, attn_implementation="eager", dtype=torch.float32
        )
    except OSError as err:
        raise WWMError(f"could not load the masked-LM model in {hf_dir!r}: {err}") from err
    return model.eval()


def jax_sums(
    hf_dir: str, rows: list[dict[str, np.ndarray]], masking: MaskingConfig, config: RunConfig
) -> dict[str, float]:
    import functools

    import jax

    from wwm_jax import sharding as shd
    from wwm_jax.train import eval_sums
    from wwm_jax.train_step import eval_step, masked_bound

    graphdef, params = load_jax(hf_dir)
    L = rows[0]["input_ids"].shape[1] if rows else 1
    eval_fn = jax.jit(functools.partial(eval_step, graphdef=graphdef, max_masked=masked_bound(masking, L)))
    mesh = shd.make_mesh(dataclasses.replace(config.parallel, mode="sharded"))
    return eval_sums(eval_fn, params, rows, mesh)


def torch_sums(hf_dir: str, rows: list[dict[str, np.ndarray]]) -> dict[str, float]:
    import torch

    from wwm_torch.model import head_at_rows, mlm_head
    from wwm_torch.trainer import masked_lm_sums

    model = load_torch(hf_dir)
    try:
        mlm_head(model)
        at_rows = head_at_rows  # the head at the masked rows only, as the trainer evaluates
    except WWMError:  # a head the trainer does not know (yet): every position, the same sums
        at_rows = lambda model, rows: contextlib.nullcontext()  # noqa: E731
    sums = torch.zeros(3, dtype=torch.float64)  # ce, correct, count
    with torch.no_grad():
        for batch in rows:
            labels = torch.as_tensor(batch["labels"], dtype=torch.long)
            inputs = {k: torch.as_tensor(batch[k], dtype=torch.long) for k in ("input_ids", "attention_mask")}
            with at_rows(model, labels != IGNORE_INDEX):
                logits = model(**inputs).logits
            ce, masked, correct = masked_lm_sums(logits, labels)
            sums += torch.stack([ce.double(), correct.double(), masked.double()])
    ce, correct, count = sums.tolist()
    return {"ce_sum": ce, "correct": correct, "count": count}


# ---------------------------------------------------------------------------------------------- the command
def evaluate(model_path: str, config: RunConfig, frameworks: tuple[str, ...]) -> dict[str, Any]:
    """{"model", "data", "<framework>": {"loss", "accuracy", "perplexity"}, "rel_loss_diff" (both run),
    "unigram_loss", "majority_accuracy", ...}."""
    from wwm.data import prepare_dataset

    highest_precision()
    with contextlib.ExitStack() as stack:
        source = resolve_model(model_path, stack)
        config = eval_config(config, source.tokenizer_dir)
        check_positions(config, source.hf_dir)
        prepared = prepare_dataset(config)
        check_vocabulary(prepared.tokenizer, source.hf_dir)
        if prepared.validation is None:
            raise WWMError(
                "the config has no validation split; set data.validation_fraction or data.validation_files"
            )
        rows = masked_validation_rows(prepared, config)
        # "blocks": those evaluated (eval.max_batches may stop before the end); "of_blocks": the split's.
        out: dict[str, Any] = {"model": source.description, "blocks": int(sum(len(r["labels"]) for r in rows)),
                               "of_blocks": len(prepared.validation), "batches": len(rows),
                               "masked_tokens": int(sum((r["labels"] != IGNORE_INDEX).sum() for r in rows))}  # fmt: skip
        for name in frameworks:
            sums = (
                jax_sums(source.hf_dir, rows, prepared.masker().config, config)
                if name == "jax"
                else torch_sums(source.hf_dir, rows)
            )
            m = mlm_metrics(**sums)
            out[name] = {
                "loss": m["eval_loss"],
                "accuracy": m["eval_accuracy"],
                "perplexity": m["eval_perplexity"],
            }
        if len(frameworks) > 1:
            a, b = out["jax"]["loss"], out["torch"]["loss"]
            out["rel_loss_diff"] = abs(a - b) / max(abs(b), 1e-12)
            out["tolerance"] = TOLERANCE
        out.update(unigram_baseline(prepared, rows))
    return out


def format_report(result: dict[str, Any]) -> str:
    part = "" if result["blocks"] == result["of_blocks"] else f" of {result['of_blocks']} (eval.max_batches)"
    lines = [f"model          {result['model']}",
             f"data           {result['blocks']} validation blocks{part} in {result['batches']} batches, "
             f"{result['masked_tokens']:,} masked tokens (the trainers' fixed epoch-0 masks)"]  # fmt: skip
    for name in FRAMEWORKS:
        if name in result:
            r = result[name]
            lines.append(
                f"{name:<14} loss {r['loss']:.4f}  accuracy {r['accuracy']:.4f}  perplexity {r['perplexity']:.2f}"
            )
    if "rel_loss_diff" in result:
        verdict = "agree" if result["rel_loss_diff"] <= result["tolerance"] else "DIFFER"
        lines.append(
            f"rel_loss_diff  {result['rel_loss_diff']:.2e} (tolerance {result['tolerance']:.0e}): {verdict}"
        )
    lines.append(f"unigram        loss {result['unigram_loss']:.4f} (add-one unigram of {result['training_tokens']:,} "
                 f"training tokens); majority accuracy {result['majority_accuracy']:.4f} "
                 f"(always {result['majority_token']!r})")  # fmt: skip
    return "\n".join(lines)


def frameworks_of(choice: str) -> tuple[str, ...]:
    return FRAMEWORKS if choice == "both" else (choice,)


# ---------------------------------------------------------------------------------------------- fill-mask
@dataclasses.dataclass
class MaskedText:
    text: str
    input_ids: np.ndarray  # (L,) int32, masked
    positions: list[int]  # the masked positions
    originals: list[str | None]  # the token each --mask-words mask replaced (None: a mask in the text)


def mask_text(tokenizer: Any, text: str, mask_words: tuple[str, ...], max_len: int) -> MaskedText:
    """Tokenize `text`; every token of each word equal to one of `mask_words` (case-folded) becomes the
    mask token, as do the mask tokens written in the text."""
    enc = tokenizer(text, truncation=True, max_length=max_len, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], np.int32)
    originals: dict[int, str | None] = {int(i): None for i in np.flatnonzero(ids == tokenizer.mask_token_id)}
    wanted = {w.casefold() for w in mask_words}
    spans: dict[int, list[int]] = {}
    for pos, word in enumerate(enc.word_ids()):
        if word is not None and pos not in originals:
            spans.setdefault(word, []).append(pos)
    for positions in spans.values():
        start, end = enc["offset_mapping"][positions[0]][0], enc["offset_mapping"][positions[-1]][1]
        if text[start:end].strip().casefold() in wanted:
            for pos in positions:
                originals[pos] = tokenizer.convert_ids_to_tokens(int(ids[pos]))
                ids[pos] = tokenizer.mask_token_id
    if not originals:
        raise WWMError(
            f"{text!r} has no {tokenizer.mask_token} and no word of --mask-words; write {tokenizer.mask_token} "
            "where a token is to be predicted, or name a word of the text with --mask-words"
        )
    positions = sorted(originals)
    return MaskedText(text, ids, positions, [originals[p] for p in positions])


def _probabilities(logits: np.ndarray) -> np.ndarray:
    """(..., V) logits -> float64 softmax."""
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def mask_probabilities(hf_dir: str, items: list[MaskedText], framework: str) -> list[np.ndarray]:
    """For each text, (number of masks, V) probabilities at its masked positions (one text at a time:
    no padding)."""
    if framework == "jax":
        from flax import nnx

        graphdef, params = load_jax(hf_dir)
        model = nnx.merge(graphdef, params)

        def logits(ids):
            return np.asarray(model(ids, np.ones_like(ids), deterministic=True))  # (1, L, V)
    else:
        import torch

        torch_model = load_torch(hf_dir)

        def logits(ids):
            with torch.no_grad():
                return torch_model(input_ids=torch.as_tensor(ids, dtype=torch.long)).logits.float().numpy()

    return [_probabilities(logits(item.input_ids[None, :])[0, item.positions]) for item in items]


def fill_mask(model_path: str, texts: list[str], frameworks: tuple[str, ...], top_k: int,
              mask_words: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """{"model", "texts": [{"text", "masks": [{"position", "original", "<framework>": [{"token", "id",
    "score"}]}]}], "max_abs_score_diff" (both run)}."""
    from wwm.data.tokenizer import load_tokenizer
    from wwm.preflight import usable_positions

    if top_k < 1:
        raise WWMError(f"--top-k must be at least 1; got {top_k}")
    highest_precision()
    with contextlib.ExitStack() as stack:
        source = resolve_model(model_path, stack)
        tokenizer = load_tokenizer(source.tokenizer_dir)
        check_vocabulary(tokenizer, source.hf_dir)
        if tokenizer.mask_token_id is None:
            raise WWMError(f"the tokenizer of {source.hf_dir} has no mask token")
        max_len = usable_positions(_hf_config(source.hf_dir))
        items = [mask_text(tokenizer, text, mask_words, max_len) for text in texts]
        probs = {name: mask_probabilities(source.hf_dir, items, name) for name in frameworks}
    out: dict[str, Any] = {"model": source.description, "texts": []}
    for t, item in enumerate(items):
        masks = []
        for m, (pos, original) in enumerate(zip(item.positions, item.originals, strict=True)):
            entry: dict[str, Any] = {"position": pos, "original": original}
            for name in frameworks:
                p = probs[name][t][m]
                top = np.argsort(-p, kind="stable")[:top_k]
                entry[name] = [{"token": tokenizer.convert_ids_to_tokens(int(i)), "id": int(i), "score": float(p[i])}
                               for i in top]  # fmt: skip
            masks.append(entry)
        out["texts"].append({"text": item.text, "masks": masks})
    if len(frameworks) > 1:
        out["max_abs_score_diff"] = max(
            float(np.max(np.abs(a - b))) for a, b in zip(probs["jax"], probs["torch"], strict=True)
        )
    return out


def format_fill_mask(result: dict[str, Any]) -> str:
    lines = [f"model  {result['model']}"]
    frameworks = [name for name in FRAMEWORKS if result["texts"] and name in result["texts"][0]["masks"][0]]
    for text in result["texts"]:
        lines.append(f"text   {text['text']}")
        for i, mask in enumerate(text["masks"], 1):
            was = f" (was {mask['original']!r})" if mask["original"] is not None else ""
            for name in frameworks:
                top = "  ".join(f"{c['token']!r} {c['score']:.3f}" for c in mask[name])
                lines.append(f"  mask {i} at {mask['position']}{was} [{name}]: {top}")
    if "max_abs_score_diff" in result:
        lines.append(f"jax vs torch: max |score difference| {result['max_abs_score_diff']:.1e}")
    return "\n".join(lines)
