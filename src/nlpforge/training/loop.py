"""The training loop every task runs: AdamW, warmup + decay, accumulation, clipping, per-epoch
evaluation, and keeping the best epoch's weights.

A task supplies the model, a function that gives an epoch's batches, a loss and an evaluation;
the loop owns the optimisation. It is a plain function, not a Trainer class.

    state = fit(model, epoch_batches, steps_per_epoch, settings, loss_fn, evaluate)
"""
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm


@dataclass
class LoopSettings:
    epochs: int
    learning_rate: float
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    lr_schedule: str = "linear"
    gradient_accumulation: int = 1
    max_grad_norm: float = 1.0
    metric_for_best: str = "macro_f1"
    progress: bool = True


@dataclass
class LoopState:
    """Counters and history; what a later resume needs besides the tensors."""

    epoch: int = 0
    step: int = 0                 # optimizer steps taken
    best_metric: float | None = None
    best_epoch: int | None = None
    history: list = field(default_factory=list)  # one dict of metrics per epoch
    samples: int = 0              # training examples processed
    padded_tokens: int = 0        # B * T summed over batches: what the encoder computed on
    train_seconds: float = 0.0


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with no decay on biases and LayerNorm weights, as BERT was trained."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate)


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


def is_better(metric: float, best: float | None) -> bool:
    return best is None or metric > best


def fit(model: torch.nn.Module, epoch_batches: Callable[[int], Iterable[dict]], batches_per_epoch: int,
        settings: LoopSettings, loss_fn: Callable, evaluate: Callable[[torch.nn.Module], dict],
        log: Callable[[str], None] = print) -> LoopState:
    """Train for `settings.epochs`; afterwards `model` holds the best epoch's weights."""
    steps_per_epoch = math.ceil(batches_per_epoch / settings.gradient_accumulation)
    total_steps = steps_per_epoch * settings.epochs
    optimizer = make_optimizer(model, settings.learning_rate, settings.weight_decay)
    scheduler = make_scheduler(optimizer, settings.lr_schedule, int(settings.warmup_ratio * total_steps), total_steps)
    state = LoopState()
    best_weights = None
    bar = tqdm(total=batches_per_epoch * settings.epochs, disable=not settings.progress, unit="batch",
               dynamic_ncols=True, leave=False)
    for epoch in range(settings.epochs):
        state.epoch = epoch
        model.train()
        started = time.perf_counter()
        running_loss, running_count = 0.0, 0
        for index, batch in enumerate(epoch_batches(epoch)):
            labels = batch.pop("labels")
            logits = model(**batch).logits  # (B, num_labels)
            loss = loss_fn(logits, labels)
            (loss / settings.gradient_accumulation).backward()
            last_of_group = (index + 1) % settings.gradient_accumulation == 0 or index + 1 == batches_per_epoch
            if last_of_group:
                if settings.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
            state.samples += labels.shape[0]
            state.padded_tokens += batch["input_ids"].numel()
            running_loss += loss.item() * labels.shape[0]
            running_count += labels.shape[0]
            elapsed = state.train_seconds + time.perf_counter() - started
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running_loss / running_count:.4f}",
                            samples_s=f"{state.samples / max(elapsed, 1e-9):.1f}", refresh=False)
        state.train_seconds += time.perf_counter() - started
        metrics = {"epoch": epoch + 1, "train_loss": running_loss / max(1, running_count), **evaluate(model)}
        state.history.append(metrics)
        score = metrics[settings.metric_for_best]
        marker = ""
        if is_better(score, state.best_metric):
            state.best_metric, state.best_epoch = score, epoch + 1
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            marker = "  (best so far)"
        bar.clear()
        log(f"epoch {epoch + 1}/{settings.epochs}: train loss {metrics['train_loss']:.4f}  "
            + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("validation_"))
            + f"  [{state.samples / max(state.train_seconds, 1e-9):.1f} samples/s]{marker}")
    bar.close()
    if best_weights is not None:
        model.load_state_dict(best_weights)
    return state
