"""Train any task: read the data, build the model, run the engine, write the artifact folder.

    job = job_class("text-classification").of(train="train.csv", validation="val.csv",
                                               text_column=["review_body"], label_column="star_rating",
                                               model="minilm-l6", output="models/stars", epochs=2)
    result = train(job)

A job is also a file, read by this module's entry point: that is how `--nproc N` relaunches
itself under torchrun and how the SDK's built-in estimators run inside a training job, with no
command line to compose and parse again:

    python -m nlpforge.training.run settings.json      # {"task": "text-classification", "settings": {...}}
"""
import json
import os
import random
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from nlpforge import tasks
from nlpforge.errors import (ArtifactError, ConfigError, DataError, InputError, ModelNotFoundError, NlpforgeError,
                             RuleStopped, VocabularyError)
from nlpforge.models import artifact
from nlpforge.models.attention import attention_for_varying_lengths
from nlpforge.models.dropout import use_cpu_dropout
from nlpforge.models.frozen import TRAINED_ON_TOP, freeze_lowest_layers, frozen_layer_count, frozen_outputs_cached
from nlpforge.models.registry import load_tokenizer, loading_errors, resolve_base
from nlpforge.settings import check_apart, check_device, check_writable, from_flat, to_flat
from nlpforge.training import distributed
from nlpforge.training.loop import fit, sharded_runner
from nlpforge.training.precision import resolve_precision
from nlpforge.training.settings import TrainJob, job_class


@dataclass
class TrainResult:
    output: Path
    metrics: dict                 # validation (and test) metrics of the best epoch
    history: list                 # per-epoch metrics
    train_seconds: float
    samples: int
    padded_tokens: int
    parameters: int
    data_report: str = ""
    extra: dict = field(default_factory=dict)
    rules: dict = field(default_factory=dict)   # Debugger rule name -> final status

    @property
    def samples_per_second(self) -> float:
        return self.samples / max(self.train_seconds, 1e-9)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name)
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device; use cpu, cuda, cuda:N or auto") from None


def write_job(job: TrainJob, path) -> Path:
    """The job as a settings file that `python -m nlpforge.training.run` reads."""
    path = Path(path)
    path.write_text(json.dumps({"task": job.task, "settings": asdict(job)}, indent=1) + "\n", encoding="utf-8")
    return path


def read_job(path) -> TrainJob:
    """A job from a settings file written by `write_job` (or by hand: {"task": ..., "settings": {...}})."""
    path = Path(path)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: not a readable job settings file ({error})") from None
    if not isinstance(saved, dict) or "task" not in saved or not isinstance(saved.get("settings"), dict):
        raise ConfigError(f'{path}: a job settings file holds {{"task": ..., "settings": {{...}}}}')
    return from_flat(job_class(saved["task"]), saved["settings"], where=str(path))


def train(job: TrainJob, log=print, on_step=None) -> TrainResult:
    """Read the data, train, keep the best epoch, and write the artifact folder (rank 0).

    With nproc or nnodes above 1 and no torchrun around us, re-launch under torchrun and wait.
    """
    check_output(job)
    if job.distributed.launch and not distributed.under_torchrun():
        device = resolve_device(job.runtime.device)  # a device this machine lacks is one line here, not one per rank
        if job.runtime.precision != "auto":  # so is a precision it lacks (auto would measure, and take a GPU here)
            resolve_precision(job.runtime.precision, device)
        return _launch_distributed(job, log)
    if distributed.restart_count() and job.checkpoint.resume is None:
        job.checkpoint.resume = "auto"
        if os.environ.get("RANK", "0") == "0":
            log(f"restart {distributed.restart_count()} of at most {job.distributed.max_restarts}: resuming from "
                "the newest checkpoint")
    device = resolve_device(job.runtime.device)
    world = distributed.setup(device.type)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    try:
        return _train(job, device, world, log if world.is_main else (lambda *_: None), on_step)
    finally:
        distributed.teardown()


def data_paths(job: TrainJob) -> list:
    """The files and folders a job's data settings name: its task's channels (train, validation, test, a masked-LM
    corpus), not a column or other setting whose value happens to name a file here."""
    flat = to_flat(job.data)  # with nested groups': the corpus is in masked-LM's `source`
    return [path for name in tasks.get(job.task).channels.values() for path in existing_paths(flat.get(name))]


def existing_paths(value) -> list[str]:
    """The paths a data setting (one path, a list of them, or None) names that exist here."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [str(v) for v in values if isinstance(v, (str, Path)) and v and os.path.exists(v)]


def check_output(job: TrainJob) -> None:
    """Before any work: the model folder can be written (and replaced only with --overwrite), and the
    checkpoints are kept apart from it and out of the data folders."""
    check_apart(job.output, data_paths(job))
    artifact.check_output(job.output, job.overwrite)
    check_training_folder(job)
    if job.checkpoint.checkpoint_dir:
        output, checkpoints = Path(job.output).resolve(), Path(job.checkpoint.checkpoint_dir).resolve()
        if checkpoints == output or output in checkpoints.parents:
            raise ConfigError(f"--checkpoint-dir {job.checkpoint.checkpoint_dir} is inside --output {job.output}, "
                              "which is replaced when the model is written; choose a folder outside it")
        for source in data_paths(job):  # a resume would read the checkpoints as data (a corpus folder)
            at = Path(source).resolve()
            if at == checkpoints or at in checkpoints.parents:
                raise ConfigError(f"--checkpoint-dir {job.checkpoint.checkpoint_dir} "
                                  f"{'is' if at == checkpoints else 'is inside'} the input {source}, so the next "
                                  "run, and a resume, would read the checkpoints as data; choose a folder outside it")
        check_writable(checkpoints, "--checkpoint-dir", folder=True)


def _launch_distributed(job: TrainJob, log) -> TrainResult:
    d = job.distributed
    with tempfile.TemporaryDirectory() as folder:
        settings = write_job(job, Path(folder) / "settings.json")
        log(f"launching {d.nproc} process(es) x {d.nnodes} node(s) through torchrun")
        if d.nnodes > 1:  # the rendezvous is silent while it waits
            log(f"waiting for all {d.nnodes} nodes to join at {d.master_addr}:{d.master_port} (node {d.node_rank}; "
                "torchrun gives up after 15 minutes; Ctrl-C stops)")
        code = distributed.launch(["-m", "nlpforge.training.run", str(settings)], d.nproc, d.nnodes, d.node_rank,
                                  d.master_addr, d.master_port, d.max_restarts)
    if code != 0:
        raise ConfigError(f"distributed training exited with code {code}; see the messages above")
    meta, _ = artifact.read_metadata(job.output)
    metrics = meta["metrics"]
    return TrainResult(Path(job.output), metrics, meta.get("history", []), metrics.get("train_seconds", 0.0),
                       metrics.get("train_samples", 0), metrics.get("padded_tokens", 0), 0,
                       rules=meta.get("rules", {}))


def warn_if_held_out_is_training_data(data, log) -> None:
    """Say so when a validation or test file or folder is, holds or lies in the training data (--train, or a
    masked-LM --corpus, which may be a folder): its metrics then measure memory."""
    def overlap(held: Path, path: Path) -> bool:
        held_at, path_at = held.resolve(), path.resolve()
        return held.samefile(path) or held_at.is_relative_to(path_at) or path_at.is_relative_to(held_at)

    flag, training = "--train", getattr(data, "train", None)
    if not training and getattr(data, "source", None) is not None:
        flag, training = "--corpus", getattr(data.source, "corpus", None)
    for role in ("validation", "test"):
        for held in map(Path, existing_paths(getattr(data, role, None))):
            shared = next((path for path in map(Path, existing_paths(training)) if overlap(held, path)), None)
            if shared is not None:
                picks, instead = ((" (and the best epoch they pick)", ", or leave out --validation to hold out part "
                                   "of the training data") if role == "validation" else ("", ""))
                log(f"warning: --{role} {held} is also training data ({flag} {shared}), so the {role} metrics{picks} "
                    f"measure what the model has seen; give a held-out file{instead}")


RUN_ENTRIES = ("metrics.jsonl", "tensorboard", "debug", "checkpoints")  # what a run keeps in OUTPUT.training/


def check_training_folder(job: TrainJob) -> None:
    """The run's working folder, OUTPUT.training/, is removed when the run ends: refuse one that holds an input
    or anything a run did not write there."""
    live = artifact.training_folder(job.output)
    check_apart(live, data_paths(job), what="the run's working folder")
    if live.exists() and not live.is_dir():
        raise ConfigError(f"{live} is a file; a run keeps its metrics and checkpoints in OUTPUT.training/ beside "
                          "the model: move the file or choose another --output")
    allowed = set(RUN_ENTRIES)
    if job.checkpoint.checkpoint_dir:  # a --checkpoint-dir of the user's may lie in there too
        checkpoints = Path(os.path.abspath(Path(job.checkpoint.checkpoint_dir).expanduser()))
        if live in checkpoints.parents:
            allowed.add(checkpoints.relative_to(live).parts[0])
    foreign = sorted(p.name for p in live.iterdir() if p.name not in allowed) if live.is_dir() else []
    if foreign:
        raise ConfigError(f"{live} holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, which no "
                          "run wrote; a run keeps its metrics and checkpoints in OUTPUT.training/ and removes it "
                          "when it ends: move those files or choose another --output")


def _train(job: TrainJob, device: torch.device, world, log, on_step=None) -> TrainResult:
    task = tasks.get(job.task)
    runtime = job.runtime
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    if runtime.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    precision = resolve_precision(runtime.precision, device)
    seed_everything(job.train.seed)
    warn_if_held_out_is_training_data(job.data, log)
    base = resolve_base(job.model.model, job.model.tokenizer)
    with loading_errors(base.tokenizer, "name another --tokenizer" if job.model.tokenizer else "name another --model"):
        tokenizer = load_tokenizer(base)
    data = task.prepare(job.data, tokenizer, max_seq_length=job.model.max_seq_length, seed=job.train.seed, log=log)
    with loading_errors(base.weights or base.tokenizer, "name another --model"):
        model = task.build_model(base, tokenizer, data, job.model, log)
    embeddings = model.get_input_embeddings().num_embeddings
    if embeddings != len(tokenizer):
        raise ConfigError(f"the tokenizer has {len(tokenizer):,} entries but {job.model.model}'s embeddings have "
                          f"{embeddings:,}; use the model's own tokenizer (leave out --tokenizer), or train a "
                          "model from scratch on this tokenizer (e.g. --model bert-mini)")
    frozen_layers = frozen_layer_count(model, job.model.freeze_layers, base.pretrained)
    if job.model.freeze_layers is None and frozen_layers:
        log(f"freezing the embeddings and the lowest {frozen_layers} of {frozen_layers + TRAINED_ON_TOP} layers: only "
            f"the top {TRAINED_ON_TOP} train (--freeze-layers 0 trains every layer)")
    freeze_lowest_layers(model, frozen_layers)
    model.to(device)
    attention_for_varying_lengths(device)  # no cuDNN attention plan per batch length on a GPU
    if device.type == "cpu":
        use_cpu_dropout(model)  # dropout masks a quarter of the generator calls (nlpforge.models.dropout)
    log(data.report)
    if len(data.train) < world.size:
        raise DataError(f"{len(data.train)} training rows cannot feed {world.size} processes")
    fingerprint = {"task": job.task, **to_flat(job.model), **to_flat(job.train), **data.fingerprint,
                   "world_size": world.size, "precision": runtime.precision}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batches = -(-len(data.train) // job.train.batch_size)
    processes = f" x {world.size} processes" if world.distributed else ""
    log(f"model {job.model.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
        f"({trainable / 1e6:.1f}M trainable); {job.train.epochs} epochs x about {batches} batches of "
        f"{job.train.batch_size}; {precision} on {device}{processes}")
    pad_id = tokenizer.pad_token_id or 0
    # The final evaluation too reads the frozen layers' kept outputs (the best weights are the upper layers').
    with frozen_outputs_cached(model, frozen_layers if task.same_inputs_every_epoch else 0, pad_id) as frozen:
        if frozen is not None:
            log(f"frozen layers: computing the output of the embeddings and the lowest {frozen_layers} layers for "
                f"the {len(data.train):,} training texts once")
        state = fit(model, data, job, fingerprint, world=world, device=device, precision=precision, pad_id=pad_id,
                    log=log, on_step=on_step, warm=frozen.warm if frozen is not None else None)
        run = sharded_runner(model, world, device, job.eval.eval_batch_size, pad_id)
        metrics = {**data.evaluate(run), "best_epoch": state.best_epoch, "train_seconds": state.train_seconds,
                   "train_samples": state.samples, "padded_tokens": state.padded_tokens,
                   "train_samples_per_second": state.samples / max(state.train_seconds, 1e-9)}
        if data.test is not None:
            metrics.update(data.test(run))
        if frozen is not None:
            log(f"frozen layers: the output of the embeddings and the lowest {frozen_layers} layers was "
                f"computed once for each of {len(frozen.kept):,} texts ({frozen.kept_bytes / 2**20:,.0f} MiB kept)")
    output = Path(job.output)
    if world.is_main:
        live = artifact.training_folder(output)
        artifact.save(output, model, tokenizer, task=job.task, base_model=job.model.model,
                      max_seq_length=job.model.max_seq_length, hyperparameters=to_flat(job), metrics=metrics,
                      data_files=data.files, task_info=data.task_info, card_notes=data.card_notes,
                      example_input=task.example_input,
                      extra={"history": state.history, **data.extra, "precision": precision,
                             "world_size": world.size, "resumed_from": state.resumed_from,
                             **({"rules": state.rules} if state.rules else {})},
                      include=[live / "metrics.jsonl", live / "tensorboard", live / "debug"])
        if job.checkpoint.checkpoint_dir is None:
            shutil.rmtree(live, ignore_errors=True)  # the run finished; the artifact is what stays
        elif live.is_dir() and not any(live.iterdir()):
            live.rmdir()
        log(f"wrote {output} (best epoch {state.best_epoch}: {task.describe_metrics(metrics)})")
    distributed.barrier(world)
    return TrainResult(output, metrics, state.history, state.train_seconds, state.samples, state.padded_tokens,
                       sum(p.numel() for p in model.parameters()), data.report, data.extra, state.rules)


# Errors that a restart of the ranks would only repeat: a bad file, setting or model folder, a rule's stop.
USER_ERRORS = (ArtifactError, ConfigError, DataError, InputError, ModelNotFoundError, RuleStopped, VocabularyError)


def main(argv=None) -> None:
    """`python -m nlpforge.training.run SETTINGS.json`: train the job the file describes."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m nlpforge.training.run SETTINGS.json", file=sys.stderr)
        sys.exit(2)
    try:
        train(read_job(argv[0]))
    except NlpforgeError as error:
        if isinstance(error, USER_ERRORS):  # a restart would end the same way (not so a server that is down)
            distributed.stop_restarts(error.exit_code, f"error: {error}")
        else:
            print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
