"""The training engine every task runs on.

It owns optimisation (AdamW, warmup + linear/cosine decay, accumulation, clipping), mixed
precision, DistributedDataParallel, per-epoch evaluation with the best epoch kept, early stopping,
per-step metrics (JSONL + TensorBoard), Debugger rules on its own tensors (nlpforge.training.debugger),
and checkpoints of every object, so that a run killed at any step resumes exactly where it stopped,
with no batch replayed. It is a plain function.

A task hands it a `TrainingData` (nlpforge.tasks.base): the training rows and their lengths, how
examples become a batch, the per-example loss and evaluation. Batches are grouped by length and
rebuilt from the seed for any epoch, so the position in an epoch is a number, not a replay.

    state = fit(model, data, job, fingerprint, world=world, device=device, precision="fp32", log=print)
"""
import contextlib
import functools
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from nlpforge.data.batching import MODEL_INPUTS, length_grouped_batches
from nlpforge.errors import ConfigError, RuleStopped, TrainingInterrupted
from nlpforge.models.artifact import training_folder
from nlpforge.tasks.base import TrainingData, run_features
from nlpforge.training import checkpoint as ckpt
from nlpforge.training.debugger import ISSUES, Debugger, Summary
from nlpforge.training.distributed import World, all_sum, barrier, gather_objects, shard
from nlpforge.training.precision import autocast, grad_scaler
from nlpforge.training.progress import MetricLog, progress_bar


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
    rules: dict = field(default_factory=dict)   # Debugger rule name -> InProgress, NoIssuesFound or IssuesFound
    average_start: int | None = None  # weights after the steps past this one are averaged (--average-from)


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float,
                   layer_decay: float = 1.0) -> torch.optim.Optimizer:
    """AdamW with no decay on biases and LayerNorm weights, as BERT was trained. With `layer_decay` < 1,
    each encoder layer learns at `layer_decay` times the rate of the layer above it (the embeddings
    below the lowest layer); the task head gets the full rate."""
    depth = _layer_depths(model) if layer_decay != 1.0 else {}
    top = max(depth.values(), default=0) + 1
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        no_decay = parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        scale = layer_decay ** (top - depth.get(name, top))
        group = groups.setdefault((scale, no_decay), {"params": [], "weight_decay": 0.0 if no_decay else weight_decay,
                                                      "lr": learning_rate * scale, "lr_scale": scale})
        group["params"].append(parameter)
    # The fused kernel (CPU and CUDA) does the whole update in one pass per parameter group.
    return torch.optim.AdamW(list(groups.values()), lr=learning_rate, fused=True)


def _layer_depths(model: torch.nn.Module) -> dict[str, int]:
    """Encoder parameters' depth: 0 for the embeddings, i + 1 for layer i; the head has none."""
    import re

    depths = {}
    for name, _ in model.named_parameters():
        layer = re.search(r"(?:^|\.)encoder\.layer\.(\d+)\.", name)
        if layer:
            depths[name] = int(layer.group(1)) + 1
        elif re.search(r"(?:^|\.)embeddings\.", name):
            depths[name] = 0
    return depths


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


def checkpoint_folder(job) -> Path:
    """Where a job's checkpoints go: --checkpoint-dir, else OUTPUT.training/checkpoints."""
    return Path(job.checkpoint.checkpoint_dir or training_folder(job.output) / "checkpoints")


def sharded_runner(model, world: World, device: torch.device, batch_size: int, pad_id: int):
    """The `run(forward, features)` a task's evaluation gets: each rank runs its share of the
    features, and every rank gets all outputs back in order."""

    def run(forward: Callable, features: list, keys=MODEL_INPUTS) -> list:
        mine = list(range(world.rank, len(features), world.size))

        def call(arrays: dict) -> dict:
            batch = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
            with torch.inference_mode():
                return {k: v.detach().float().cpu().numpy() for k, v in forward(model, batch).items()}

        was_training = model.training
        model.eval()
        outputs = run_features(call, [features[i] for i in mine], pad_id, max_rows=batch_size, keys=keys)
        model.train(was_training)
        merged: list = [None] * len(features)
        for indices, values in gather_objects((mine, outputs), world):
            for i, value in zip(indices, values):
                merged[i] = value
        return merged

    return run


def fit(model: torch.nn.Module, data: TrainingData, job, fingerprint: dict, *, world: World = World(),
        device: torch.device = torch.device("cpu"), precision: str = "fp32", pad_id: int = 0,
        log: Callable[[str], None] = print, on_step: Callable[[int], None] | None = None,
        warm: Callable | None = None) -> LoopState:
    """Train `model` on `data` as `job` says; afterwards `model` holds the best epoch's weights.

    `fingerprint` is what a checkpoint must match to resume this run; `on_step(step)` is called after
    every optimizer step (a hook for tests and spot simulation); `warm(batches)`, when given, is handed this
    rank's batches of the first epoch before training starts, fresh or resumed (frozen layers compute their
    outputs from them: nlpforge.models.frozen). Raises TrainingInterrupted on SIGTERM, and RuleStopped when a
    Debugger rule with the stop action finds an issue.
    """
    run = _Run(model, data, job, fingerprint, world, device, precision, pad_id, log, on_step)
    if warm is not None:
        warm({k: v.to(device) for k, v in data.collate([data.train[i] for i in shard(b, world)]).items()}
             for b in run.epoch_batches(0) if len(b) >= world.size)
    try:
        with _StopSignal() as run.stop:
            while run.state.epoch < job.train.epochs and not run.state.stopped_early:
                run.epoch()
        if run.debugger:
            run.rules_changed({k: v for k, v in run.debugger.finish().items() if run.state.rules.get(k) != v}, [])
    finally:
        run.bar.close()
        run.metrics_log.close()
        run.tensors_log.close()
        if run.debugger:
            run.debugger.unwatch()
    if run.best_weights is not None:
        model.load_state_dict(run.best_weights)
    return run.state


class _Run:
    """One training run: the model, its optimizer and scheduler, the position, and what it writes."""

    def __init__(self, model, data: TrainingData, job, fingerprint, world, device, precision, pad_id, log, on_step):
        self.model, self.data, self.job, self.fingerprint = model, data, job, fingerprint
        self.world, self.device, self.precision, self.log, self.on_step = world, device, precision, log, on_step
        self.evaluate_run = sharded_runner(model, world, device, job.eval.eval_batch_size, pad_id)
        self.checkpoint_dir = checkpoint_folder(job)
        train = job.train
        batches_per_epoch = len(self.epoch_batches(0))
        steps_per_epoch = math.ceil(batches_per_epoch / train.gradient_accumulation)
        total_steps = steps_per_epoch * train.epochs
        if train.max_steps:
            total_steps = min(total_steps, train.max_steps)
        self.optimizer = make_optimizer(model, train.learning_rate, train.weight_decay, train.layer_lr_decay)
        self.scheduler = make_scheduler(self.optimizer, train.lr_schedule, int(train.warmup_ratio * total_steps),
                                        total_steps)
        self.scaler = grad_scaler(precision, device)
        self.state, self.best_weights = LoopState(), None
        # Stochastic weight averaging: the running mean of the trained weights after every step past
        # `state.average_start`, which a resume keeps even where --epochs or --max-steps change.
        self.trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.state.average_start = None if train.average_from is None else int(train.average_from * total_steps)
        self.average: dict[str, torch.Tensor] | None = None
        found = None
        if job.checkpoint.resume:
            found = ckpt.find_checkpoint(job.checkpoint.resume, self.checkpoint_dir, log)
        if found is not None:
            saved = ckpt.read_checkpoint(found)
            # The learning rate may change: it is the usual fix after a Debugger rule stopped the run.
            ckpt.check_compatible(saved["config"], fingerprint, found,
                                  may_differ={"epochs", "max_steps", "learning_rate"})
            stored = ckpt.restore(found, saved, model=model, optimizer=self.optimizer, scheduler=self.scheduler,
                                  scaler=self.scaler)
            self.best_weights = stored.get("best")
            if "average" in stored:
                self.average = {name: stored["average"][name].to(p.device) for name, p in self.trainable}
            if saved["config"].get("learning_rate") != train.learning_rate:
                self.use_learning_rate(train.learning_rate)
                log(f"learning rate {saved['config'].get('learning_rate')} -> {train.learning_rate} from "
                    f"{found}; the schedule keeps its shape and position")
            self.state = LoopState(**saved["loop"])
            if self.best_weights is None and self.state.best_epoch is not None:
                # saved when the current weights were the best ones
                self.best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.state.resumed_from = str(found)
            log(f"resumed from {found}: epoch {self.state.epoch + 1}, batch {self.state.batch}/{batches_per_epoch}, "
                f"step {self.state.step}")
        self.trained = DistributedDataParallel(model) if world.distributed else model
        if job.runtime.compile:
            # Length-grouped batches change the sequence length from batch to batch: dynamic shapes compile
            # once, not once per length. `self.model` stays the plain module, so checkpoints, evaluation and
            # the Debugger see the weights under their own names (no `_orig_mod.` prefix).
            self.trained = torch.compile(self.trained, dynamic=True)
        live = training_folder(job.output)
        self.metrics_log = MetricLog(live / "metrics.jsonl", live / "tensorboard",
                                      self.state.step if found is not None else None, world.is_main)
        self.bar = progress_bar(batches_per_epoch * train.epochs,
                                self.state.epoch * batches_per_epoch + self.state.batch,
                                job.runtime.progress and world.is_main)
        self.stop: _StopSignal | None = None
        rules = job.debugger
        self.debugger = Debugger.of(rules.rules, rules.rules_interval, rules.rules_action) if rules.rules else None
        self.rules_loss, self.rules_rows, self.rule_stop = 0.0, 0, None
        self.tensors_log = MetricLog(live / "debug" / "tensors.jsonl", None,
                                      self.state.step if found is not None else None,
                                      world.is_main and self.debugger is not None)
        if self.debugger:
            self.rules_changed(self.debugger.status, [])

    def use_learning_rate(self, learning_rate: float) -> None:
        """A new peak learning rate for a resumed run: the restored scheduler and optimizer keep the old one."""
        self.scheduler.base_lrs = [learning_rate * g.get("lr_scale", 1.0) for g in self.optimizer.param_groups]
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["initial_lr"] = base
            group["lr"] = base * factor(self.scheduler.last_epoch)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]  # what get_last_lr reads

    def rule_stopped(self, when: str, path: Path | None) -> RuleStopped:
        where = f"; checkpoint {path}" if path else ""
        return RuleStopped(f"stopped by Debugger rule {self.rule_stop or 'on another rank'} {when}{where}; fix the "
                           "cause (a new --learning-rate is allowed), then resume with --resume auto")

    # Cached: start-up, the loop and the log line all ask for epoch 0's batches, and on a
    # million-row file each build sorts the whole epoch.
    @functools.lru_cache(maxsize=2)
    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The epoch's global batches of row indices, rebuilt from the seed."""
        return length_grouped_batches(self.data.lengths, self.job.train.batch_size, seed=self.job.train.seed + epoch)

    def save(self) -> Path | None:
        """A checkpoint of everything (rank 0 writes it); every rank waits for it."""
        state, path = self.state, None
        if self.world.is_main:
            # With an average, the best epoch's weights were the average's, not the current ones.
            current_is_best = state.best_epoch == state.epoch and state.batch == 0 and self.average is None
            path = ckpt.save_checkpoint(self.checkpoint_dir, state.step, model=self.model, optimizer=self.optimizer,
                                        scheduler=self.scheduler, scaler=self.scaler, loop_state=asdict(state),
                                        config=self.fingerprint,
                                        weight_sets={"best": None if current_is_best else self.best_weights,
                                                     "average": self.average},
                                        keep=self.job.checkpoint.keep_checkpoints)
        barrier(self.world)
        return path

    def epoch(self) -> None:
        """Train from the current position to the end of the epoch, then evaluate and keep the best weights."""
        state, job, world, device = self.state, self.job, self.world, self.device
        global_batches = self.epoch_batches(state.epoch)
        remaining = [b for b in global_batches[state.batch:] if len(b) >= world.size]
        if self.data.set_epoch is not None:
            self.data.set_epoch(state.epoch)
        loader = torch.utils.data.DataLoader(self.data.train, batch_sampler=[shard(b, world) for b in remaining],
                                             collate_fn=self.data.collate, num_workers=job.runtime.num_workers,
                                             # Its own generator: creating a loader must not draw from the global
                                             # RNG, or a loader made mid-epoch on resume would shift dropout masks.
                                             generator=torch.Generator())
        self.trained.train()
        started = time.perf_counter()
        window_loss, window_count, window_start = 0.0, 0, time.perf_counter()
        accumulated = 0
        for global_batch, batch in zip(remaining, loader):
            batch = {k: v.to(device) for k, v in batch.items()}
            accumulated += 1
            last_micro = accumulated == job.train.gradient_accumulation or state.batch + 1 == len(global_batches)
            sync = self.trained.no_sync() if world.distributed and not last_micro else contextlib.nullcontext()
            if self.debugger and self.debugger.due(state.step + 1):
                self.debugger.watch(self.model)
            with sync:
                with autocast(self.precision, device):
                    losses = self.data.step(self.trained, batch)  # (B,)
                # Sum over this rank's rows / global batch rows * ranks: DDP's gradient mean then equals
                # one process's mean over the whole global batch, even when shards are uneven.
                loss = losses.sum() * (world.size / len(global_batch)) / job.train.gradient_accumulation
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            batch_loss, rows = losses.detach().sum().item(), losses.shape[0]
            window_loss += batch_loss
            state.epoch_loss += batch_loss
            state.epoch_rows += rows
            if self.debugger:
                self.rules_loss += batch_loss
                self.rules_rows += rows
            window_count += rows
            state.samples += rows
            state.padded_tokens += batch["input_ids"].numel()
            state.batch += 1
            self.bar.update(1)
            if not last_micro:
                continue
            accumulated = 0
            self.optimizer_step()
            if job.runtime.log_every and state.step % job.runtime.log_every == 0:
                total_loss, total_count = all_sum([window_loss, float(window_count)], world)
                elapsed = time.perf_counter() - window_start
                record = {"step": state.step, "epoch": state.epoch + state.batch / len(global_batches),
                          "loss": total_loss / max(total_count, 1), "learning_rate": self.scheduler.get_last_lr()[0],
                          "samples_per_second": total_count / max(elapsed, 1e-9)}
                self.metrics_log.write(record)
                self.bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_second']:.1f}",
                                     refresh=False)
                window_loss, window_count, window_start = 0.0, 0, time.perf_counter()
            if job.eval.eval_every and state.step % job.eval.eval_every == 0 and state.batch < len(global_batches):
                evaluation = self.data.evaluate(self.evaluate_run)
                self.metrics_log.write({"step": state.step, "epoch": state.epoch + state.batch / len(global_batches),
                                        **evaluation})
                self.evaluated(evaluation)
            if self.on_step:
                self.on_step(state.step)
            if self.debugger and _agree(self.rule_stop is not None, world):
                state.train_seconds += time.perf_counter() - started
                raise self.rule_stopped(f"at step {state.step}", self.save())
            if job.train.max_steps and state.step >= job.train.max_steps:
                state.stopped_early = True
            stopping = _agree(self.stop.received is not None, world)
            if job.checkpoint.checkpoint_every and state.step % job.checkpoint.checkpoint_every == 0 or stopping:
                state.train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                path = self.save()
                if stopping:
                    where = f"; checkpoint {path}" if path else ""
                    raise TrainingInterrupted(f"stopped by {self.stop.received or 'a signal on another rank'} at "
                                              f"step {state.step}{where}; resume with --resume auto")
            if state.stopped_early:
                break
        state.train_seconds += time.perf_counter() - started
        self.end_of_epoch(len(global_batches))

    def optimizer_step(self) -> None:
        summary = None
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.debugger and self.debugger.due(self.state.step + 1):
            summary = self.debugger.before_step(self.model, self.state.step + 1,
                                                self.rules_loss / max(self.rules_rows, 1) if self.rules_rows else None)
            self.rules_loss, self.rules_rows = 0.0, 0
        if self.job.train.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.job.train.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        if self.state.average_start is not None and self.state.step > self.state.average_start:
            self.update_average()
        if summary is not None:
            fired = self.debugger.after_step(self.model, summary)
            self.tensors_log.write(summary.row())
            self.rules_fired(fired)

    def evaluated(self, metrics: dict) -> None:
        """Hand an evaluation's loss (a task's `validation_*loss` metric, where it reports one) to the rules."""
        if not self.debugger:
            return
        loss = next((v for k, v in metrics.items() if k.startswith("validation_") and k.endswith("loss")), None)
        summary = Summary(self.state.step, mode="eval", validation_loss=loss)
        self.tensors_log.write(summary.row())
        self.rules_fired(self.debugger.observe(summary))

    def rules_fired(self, fired: list[tuple[str, str]]) -> None:
        if fired:
            self.rules_changed({name: ISSUES for name, _ in fired}, fired)
            if self.debugger.action == "stop" and self.rule_stop is None:
                name, reason = fired[0]
                self.rule_stop = f"{name} ({reason})"

    def rules_changed(self, statuses: dict, fired: list[tuple[str, str]]) -> None:
        """Record rule statuses in the loop state, metrics.jsonl and the log."""
        reasons = dict(fired)
        self.state.rules.update(statuses)
        for name, status in statuses.items():
            record = {"step": self.state.step, "rule": name, "rule_status": status}
            if name in reasons:
                record["reason"] = reasons[name]
            self.metrics_log.write(record)
            if self.world.is_main and name in reasons:
                self.bar.clear()
                self.log(f"rule {name}: {status}: {reasons[name]}")

    def update_average(self) -> None:
        """Fold the weights after this step into the running mean of those since `average_start`."""
        count = self.state.step - self.state.average_start
        if self.average is None or count == 1:
            self.average = {name: p.detach().clone() for name, p in self.trainable}
        else:
            with torch.no_grad():
                torch._foreach_lerp_(list(self.average.values()), [p.detach() for _, p in self.trainable],
                                     1.0 / count)

    @contextlib.contextmanager
    def averaged_weights(self):
        """The model holds the average inside the block (when there is one), its own weights again after it."""
        if self.average is None:
            yield
            return
        own = [p.detach().clone() for _, p in self.trainable]
        with torch.no_grad():
            for (name, p) in self.trainable:
                p.copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, p), kept in zip(self.trainable, own):
                    p.copy_(kept)

    def check_diverged(self, train_loss: float) -> None:
        """Stop a run whose weights are no longer numbers: every later epoch, and the model it would save as the
        best, would be NaN. (A non-finite loss alone is not enough: fp16's loss scaling skips such steps.)"""
        if math.isfinite(train_loss) or all(torch.isfinite(p).all() for _, p in self.trainable):
            return
        train = self.job.train
        clipping = f"keep --max-grad-norm on (now {train.max_grad_norm:g})" if train.max_grad_norm else \
            "turn on --max-grad-norm (e.g. 1.0)"
        raise ConfigError(f"training diverged: the weights became NaN or infinite in epoch {self.state.epoch + 1} "
                          f"(step {self.state.step}, learning rate {train.learning_rate:g}); lower --learning-rate, "
                          f"or {clipping}, and start again rather than resume (checkpoints of this epoch may hold "
                          "the NaN weights)")

    def end_of_epoch(self, batches: int) -> None:
        """Evaluate (the weights' average, when one is kept), keep the best weights, log, apply early stopping,
        checkpoint."""
        state, job, world = self.state, self.job, self.world
        self.trained.eval()
        epoch_loss, epoch_rows = all_sum([state.epoch_loss, float(state.epoch_rows)], world)
        train_loss = epoch_loss / max(epoch_rows, 1)
        self.check_diverged(train_loss)
        with self.averaged_weights():
            metrics = {"step": state.step, "epoch": state.epoch + 1, "train_loss": train_loss,
                       **self.data.evaluate(self.evaluate_run)}
            score = metrics[self.data.metric_for_best]
            better = state.best_metric is None or score > state.best_metric
            if better:
                self.best_weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        if self.average is not None:
            metrics["averaged_steps"] = state.step - state.average_start
        self.metrics_log.write(metrics)
        self.evaluated(metrics)
        state.history.append(metrics)
        marker = ""
        if better:
            state.best_metric, state.best_epoch = score, state.epoch + 1
            state.epochs_without_improvement = 0
            marker = "  (best so far)"
        else:
            state.epochs_without_improvement += 1
        self.bar.clear()
        if world.is_main:
            self.log(f"epoch {state.epoch + 1}/{job.train.epochs}: "
                     + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith(("validation_", "train_")))
                     + f"  [{state.samples / max(state.train_seconds, 1e-9):.1f} samples/s]{marker}")
        state.epoch += 1
        state.batch = 0
        state.epoch_loss, state.epoch_rows = 0.0, 0
        patience = job.eval.early_stopping_patience
        if patience and state.epochs_without_improvement >= patience:
            state.stopped_early = True
            if world.is_main:
                self.log(f"early stop: {self.data.metric_for_best} did not improve for {patience} epoch(s)")
        path = self.save()
        if self.debugger and _agree(self.rule_stop is not None, world):
            raise self.rule_stopped(f"after epoch {state.epoch}", path)
        if _agree(self.stop.received is not None, world) and state.epoch < job.train.epochs and not state.stopped_early:
            where = f"; checkpoint {path}" if path else ""
            raise TrainingInterrupted(f"stopped by {self.stop.received or 'a signal on another rank'} after epoch "
                                      f"{state.epoch}{where}; resume with --resume auto")


def _agree(flag: bool, world: World) -> bool:
    """True on every rank if any rank got a stop signal."""
    if not world.distributed:
        return flag
    return all_sum([1.0 if flag else 0.0], world)[0] > 0
