"""The training engine every task runs on.

It owns optimisation (AdamW, warmup + linear/cosine decay, accumulation, clipping), mixed
precision, DistributedDataParallel, per-epoch evaluation with the best epoch kept, early stopping,
per-step metrics (JSONL + TensorBoard) and checkpoints of every object, so that a run killed at
any step resumes exactly where it stopped, with no batch replayed. It is a plain function.

A task hands it a `Task`: how an epoch's global batches are ordered (deterministic from the
seed), how a list of row indices becomes a tensor batch, the per-example loss, and evaluation.

    state = fit(model, task, settings, world, device, log=print)
"""
import contextlib
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from nlpforge.errors import NlpforgeError
from nlpforge.training import checkpoint as ckpt
from nlpforge.training.distributed import World, all_sum, barrier, shard
from nlpforge.training.precision import autocast, grad_scaler


class TrainingInterrupted(NlpforgeError):
    """SIGTERM or SIGINT arrived; a checkpoint was written and the run can be resumed."""

    code = "E500"
    exit_code = 143


@dataclass
class LoopSettings:
    epochs: int
    learning_rate: float
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    lr_schedule: str = "linear"
    gradient_accumulation: int = 1
    max_grad_norm: float = 1.0
    metric_for_best: str = "validation_macro_f1"
    early_stopping_patience: int = 0       # epochs without improvement before stopping; 0 = never
    max_steps: int = 0                      # stop after this many optimizer steps; 0 = run every epoch
    precision: str = "fp32"                 # already resolved: fp32, bf16 or fp16
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0               # optimizer steps between checkpoints; 0 = only at epoch ends
    keep_checkpoints: int = 2
    resume: str | None = None               # "auto" or a checkpoint path
    log_every: int = 10                     # optimizer steps between metric lines
    metrics_path: str | None = None         # JSONL of per-step and per-epoch metrics
    tensorboard_dir: str | None = None
    num_workers: int = 0
    progress: bool = True
    # Called after every optimizer step with the step number: a hook for tests and spot simulation.
    on_step: Callable[[int], None] | None = field(default=None, repr=False)


@dataclass
class Task:
    epoch_batches: Callable[[int], list[list[int]]]   # global batches of row indices, deterministic per epoch
    dataset: torch.utils.data.Dataset                  # row index -> example
    collate: Callable[[list], dict]                    # examples -> tensor batch with "labels"
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> per-example losses (B,)
    evaluate: Callable[[torch.nn.Module], dict]        # model -> {"validation_...": float}
    fingerprint: dict                                  # what must match for a checkpoint to resume this run


@dataclass
class LoopState:
    """Counters and position; with the tensors, everything a resume needs."""

    epoch: int = 0                # current epoch (0-based)
    batch: int = 0                # global batches consumed in the current epoch
    step: int = 0                 # optimizer steps taken
    best_metric: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    history: list = field(default_factory=list)
    samples: int = 0
    padded_tokens: int = 0
    train_seconds: float = 0.0
    epoch_loss: float = 0.0       # this rank's summed per-example loss so far in the epoch
    epoch_rows: int = 0
    stopped_early: bool = False
    resumed_from: str | None = None


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with no decay on biases and LayerNorm weights, as BERT was trained."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel (CPU and CUDA) does the whole update in one pass per parameter group.
    return torch.optim.AdamW(groups, lr=learning_rate, fused=True)


def make_scheduler(optimizer, schedule: str, warmup_steps: int, total_steps: int):
    """Linear warmup from 0, then linear or cosine decay to 0, or constant."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _StopSignal:
    """Turns SIGTERM/SIGINT into a flag checked at step boundaries (a spot interruption)."""

    def __init__(self):
        self.received = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay with the caller
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class _MetricLog:
    """Per-step and per-epoch metrics as JSON lines (and TensorBoard scalars), rank 0 only."""

    def __init__(self, path, tensorboard_dir, resume_step: int | None, enabled: bool):
        self.handle, self.writer = None, None
        if not enabled:
            return
        if path:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = []
            if resume_step is not None and path.exists():  # drop lines from steps the resume will redo
                kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                        if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            self.handle = open(path, "a", encoding="utf-8")
        if tensorboard_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(tensorboard_dir))
            except ImportError:
                self.writer = None

    def write(self, record: dict) -> None:
        if self.handle:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()
        if self.writer:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.handle:
            self.handle.close()
        if self.writer:
            self.writer.close()


def fit(model: torch.nn.Module, task: Task, settings: LoopSettings, world: World = World(),
        device: torch.device = torch.device("cpu"), log: Callable[[str], None] = print) -> LoopState:
    """Train; afterwards `model` holds the best epoch's weights. Raises TrainingInterrupted on SIGTERM."""
    batches_per_epoch = len(task.epoch_batches(0))
    steps_per_epoch = math.ceil(batches_per_epoch / settings.gradient_accumulation)
    total_steps = steps_per_epoch * settings.epochs
    if settings.max_steps:
        total_steps = min(total_steps, settings.max_steps)
    optimizer = make_optimizer(model, settings.learning_rate, settings.weight_decay)
    scheduler = make_scheduler(optimizer, settings.lr_schedule, int(settings.warmup_ratio * total_steps), total_steps)
    scaler = grad_scaler(settings.precision, device)
    state, best_weights = LoopState(), None

    found = ckpt.find_checkpoint(settings.resume, settings.checkpoint_dir) if settings.resume else None
    if found is not None:
        saved = ckpt.read_checkpoint(found)
        ckpt.check_compatible(saved["config"], task.fingerprint, found, may_differ={"epochs"})
        best_weights = ckpt.restore(found, saved, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        state = LoopState(**saved["loop"])
        if best_weights is None and state.best_epoch is not None:  # saved when the current weights were the best
            best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        state.resumed_from = str(found)
        log(f"resumed from {found}: epoch {state.epoch + 1}, batch {state.batch}/{batches_per_epoch}, step {state.step}")

    trained = DistributedDataParallel(model) if world.distributed else model
    metrics_log = _MetricLog(settings.metrics_path, settings.tensorboard_dir,
                             state.step if found is not None else None, world.is_main)

    def save(reason: str) -> Path | None:
        if not settings.checkpoint_dir:
            return None
        path = None
        if world.is_main:
            current_is_best = state.best_epoch == state.epoch and state.batch == 0
            path = ckpt.save_checkpoint(settings.checkpoint_dir, state.step, model=model, optimizer=optimizer,
                                        scheduler=scheduler, scaler=scaler, loop_state=asdict(state),
                                        config=task.fingerprint,
                                        best_weights=None if current_is_best else best_weights,
                                        keep=settings.keep_checkpoints)
        barrier(world)
        return path

    bar = tqdm(total=batches_per_epoch * settings.epochs, initial=state.epoch * batches_per_epoch + state.batch,
               disable=not (settings.progress and world.is_main), unit="batch", dynamic_ncols=True, leave=False)
    try:
        with _StopSignal() as stop:
            while state.epoch < settings.epochs and not state.stopped_early:
                best_weights = _run_epoch(trained, model, task, settings, state, world, device, optimizer, scheduler,
                                          scaler, stop, save, metrics_log, bar, best_weights, log)
    finally:
        bar.close()
        metrics_log.close()
    if best_weights is not None:
        model.load_state_dict(best_weights)
    return state


def _run_epoch(trained, model, task, settings, state, world, device, optimizer, scheduler, scaler, stop, save,
               metrics_log, bar, best_weights, log):
    """Train from the current position to the end of the epoch, then evaluate; returns the best weights."""
    global_batches = task.epoch_batches(state.epoch)
    remaining = [b for b in global_batches[state.batch:] if len(b) >= world.size]
    loader = torch.utils.data.DataLoader(task.dataset, batch_sampler=[shard(b, world) for b in remaining],
                                         collate_fn=task.collate, num_workers=settings.num_workers,
                                         # Its own generator: creating a loader must not draw from the global
                                         # RNG, or a loader made mid-epoch on resume would shift dropout masks.
                                         generator=torch.Generator())
    trained.train()
    started = time.perf_counter()
    window_loss, window_count, window_start = 0.0, 0, time.perf_counter()
    accumulated = 0
    for global_batch, batch in zip(remaining, loader):
        labels = batch.pop("labels").to(device)
        batch = {k: v.to(device) for k, v in batch.items()}
        accumulated += 1
        last_micro = accumulated == settings.gradient_accumulation or state.batch + 1 == len(global_batches)
        sync = trained.no_sync() if world.distributed and not last_micro else contextlib.nullcontext()
        with sync:
            with autocast(settings.precision, device):
                logits = trained(**batch).logits  # (B, num_labels)
            losses = task.loss(logits.float(), labels)  # (B,)
            # Sum over this rank's rows / global batch rows * ranks: DDP's gradient mean then equals
            # one process's mean over the whole global batch, even when shards are uneven.
            loss = losses.sum() * (world.size / len(global_batch)) / settings.gradient_accumulation
            (scaler.scale(loss) if scaler else loss).backward()
        batch_loss = losses.detach().sum().item()
        window_loss += batch_loss
        state.epoch_loss += batch_loss
        state.epoch_rows += labels.shape[0]
        window_count += labels.shape[0]
        state.samples += labels.shape[0]
        state.padded_tokens += batch["input_ids"].numel()
        state.batch += 1
        bar.update(1)
        if not last_micro:
            continue
        accumulated = 0
        if scaler:
            scaler.unscale_(optimizer)
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        if settings.log_every and state.step % settings.log_every == 0:
            total_loss, total_count = all_sum([window_loss, float(window_count)], world)
            elapsed = time.perf_counter() - window_start
            record = {"step": state.step, "epoch": state.epoch + state.batch / len(global_batches),
                      "loss": total_loss / max(total_count, 1), "learning_rate": scheduler.get_last_lr()[0],
                      "samples_per_second": total_count / max(elapsed, 1e-9)}
            metrics_log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_second']:.1f}",
                            refresh=False)
            window_loss, window_count, window_start = 0.0, 0, time.perf_counter()
        if settings.on_step:
            settings.on_step(state.step)
        if settings.max_steps and state.step >= settings.max_steps:
            state.stopped_early = True
        stopping = _agree(stop.received is not None, world)
        if settings.checkpoint_every and state.step % settings.checkpoint_every == 0 or stopping:
            state.train_seconds += time.perf_counter() - started
            started = time.perf_counter()
            path = save("step")
            if stopping:
                where = f"; checkpoint {path}" if path else " (no --checkpoint-dir, nothing saved)"
                raise TrainingInterrupted(f"stopped by {stop.received or 'a signal on another rank'} at step "
                                          f"{state.step}{where}; resume with --resume auto")
        if state.stopped_early:
            break
    state.train_seconds += time.perf_counter() - started
    trained.eval()
    epoch_loss, epoch_rows = all_sum([state.epoch_loss, float(state.epoch_rows)], world)
    metrics = {"step": state.step, "epoch": state.epoch + 1, "train_loss": epoch_loss / max(epoch_rows, 1),
               **task.evaluate(model)}
    metrics_log.write(metrics)
    state.history.append(metrics)
    score = metrics[settings.metric_for_best]
    marker = ""
    if state.best_metric is None or score > state.best_metric:
        state.best_metric, state.best_epoch = score, state.epoch + 1
        state.epochs_without_improvement = 0
        best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        marker = "  (best so far)"
    else:
        state.epochs_without_improvement += 1
    bar.clear()
    if world.is_main:
        log(f"epoch {state.epoch + 1}/{settings.epochs}: "
            + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith(("validation_", "train_")))
            + f"  [{state.samples / max(state.train_seconds, 1e-9):.1f} samples/s]{marker}")
    state.epoch += 1
    state.batch = 0
    state.epoch_loss, state.epoch_rows = 0.0, 0
    if settings.early_stopping_patience and state.epochs_without_improvement >= settings.early_stopping_patience:
        state.stopped_early = True
        if world.is_main:
            log(f"early stop: {settings.metric_for_best} did not improve for {settings.early_stopping_patience} epoch(s)")
    path = save("epoch")
    if _agree(stop.received is not None, world) and state.epoch < settings.epochs and not state.stopped_early:
        raise TrainingInterrupted(f"stopped by {stop.received or 'a signal on another rank'} after epoch {state.epoch}"
                                  + (f"; checkpoint {path}; resume with --resume auto" if path else ""))
    return best_weights


def _agree(flag: bool, world: World) -> bool:
    """True on every rank if any rank got a stop signal."""
    if not world.distributed:
        return flag
    return all_sum([1.0 if flag else 0.0], world)[0] > 0
