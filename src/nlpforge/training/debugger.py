"""Debugger rules: SageMaker Debugger's built-in rules, evaluated by the training engine on its own tensors.

    debugger = Debugger.of(["LossNotDecreasing", "VanishingGradient:threshold=1e-6"], interval=10, action="stop")
    debugger.watch(model)                                        # before the forward passes of a recorded step
    summary = debugger.before_step(model, step, loss=0.7)        # after backward, before the optimizer step
    fired = debugger.after_step(model, summary)                  # [(rule, reason)] of rules that just found issues

Every `interval` optimizer steps the loop hands the rules a `Summary` of what they need (loss by
mode, per-tensor gradient and weight statistics, update/weight ratios); after each evaluation it
hands them the validation loss. Each rule keeps SageMaker's name, parameters and defaults and has a
status: InProgress, then NoIssuesFound when training ends, or IssuesFound from the step it fires.

A rule is selected as `NAME` or `NAME:param=value,param=value` (`--rules` may list several, comma
separated: a piece with `=` and no `:` is a parameter of the rule before it).

Whenever rules are selected, the loop also records each summary in `debug/tensors.jsonl` of the model
folder (`OUTPUT.training/debug/` while the run goes on), one JSON object a line:

    {"step": 10, "mode": "train", "loss": 0.69,                      # mean training loss since the last row
     "gradient_norm": {"bert.encoder.layer.0.attention.self.query": 0.12, ...},   # L2 per layer, unclipped
     "weight_norm": {"bert.encoder.layer.0.attention.self.query": 9.8, ...},      # L2 per layer, after the step
     "activation_mean": {"bert.embeddings": 0.0, "bert.encoder.layer.0": -0.01, ..., "output": 0.1},
     "activation_std": {"bert.embeddings": 1.0, ...}}
    {"step": 12, "mode": "eval", "loss": 0.71}                        # after each evaluation

A layer is a module that owns parameters; its norm is over all of them. Activations are the outputs of the
embeddings, of each repeated block (the children of a ModuleList) and of the whole model (its logits), over
every position of the step's batches; forward hooks watch them only during the forward passes of a
recorded step. To plot:

    rows = pandas.read_json("OUTPUT/debug/tensors.jsonl", lines=True)
    train = rows[rows["mode"] == "train"]
    pandas.DataFrame(train["gradient_norm"].tolist(), index=train["step"]).plot(logy=True)
"""
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from nlpforge.errors import ConfigError
from nlpforge.settings import Settings, from_flat, setting

if TYPE_CHECKING:  # the summaries import torch where they run (see below)
    import torch

IN_PROGRESS, NO_ISSUES, ISSUES = "InProgress", "NoIssuesFound", "IssuesFound"


@dataclass
class Summary:
    """What the rules see at one step: loss by mode and per-tensor statistics (only those asked for)."""

    step: int
    mode: Literal["train", "eval"] = "train"
    loss: float | None = None                                       # mean training loss since the last summary
    validation_loss: float | None = None
    time: float = field(default_factory=time.monotonic)
    gradient_mean_abs: dict = field(default_factory=dict)           # tensor name -> mean |gradient|
    gradient_spread: float | None = None                            # 95th - 5th percentile of the gradients
    weight_variance: dict = field(default_factory=dict)             # weight matrix name -> variance
    update_ratio: dict = field(default_factory=dict)                # tensor name -> |w_t - w_t-1| / |w_t-1|
    nonfinite: list = field(default_factory=list)                   # tensors holding NaN or Inf
    gradient_norm: dict = field(default_factory=dict)               # layer -> L2 norm of its gradients
    weight_norm: dict = field(default_factory=dict)                 # layer -> L2 norm of its weights
    activation_mean: dict = field(default_factory=dict)             # watched module -> mean of its output
    activation_std: dict = field(default_factory=dict)

    def row(self) -> dict:
        """The line of debug/tensors.jsonl this summary becomes (see the module docstring)."""
        if self.mode == "eval":
            return {"step": self.step, "mode": "eval", "loss": self.validation_loss}
        return {"step": self.step, "mode": "train", "loss": self.loss, "gradient_norm": self.gradient_norm,
                "weight_norm": self.weight_norm, "activation_mean": self.activation_mean,
                "activation_std": self.activation_std}


@dataclass
class Rule(Settings):
    """A rule's parameters are its fields; `check_summary` returns the reason when it finds an issue."""

    argument_names: ClassVar[bool] = True
    needs: ClassVar[frozenset] = frozenset()   # of "loss", "gradients", "weights", "updates", "validation"

    def start(self) -> None:
        """Reset what the rule remembers between summaries."""

    def check_summary(self, summary: Summary) -> str | None:
        raise NotImplementedError


@dataclass
class LossNotDecreasing(Rule):
    """The loss has not decreased by diff_percent over num_steps steps."""

    needs: ClassVar[frozenset] = frozenset({"loss"})
    num_steps: int = setting(10, "steps between the two losses compared", min=1)
    diff_percent: float = setting(0.0, "minimum decrease, in percent of the earlier loss", min=0, max=100)
    mode: Literal["train", "eval"] = setting("train", "whose loss: train or eval")

    def start(self):
        self.earlier: tuple[int, float] | None = None

    def check_summary(self, summary):
        loss = summary.loss if self.mode == "train" else summary.validation_loss
        if loss is None or summary.mode != self.mode:
            return None
        if self.earlier is None:
            self.earlier = (summary.step, loss)
            return None
        step, earlier = self.earlier
        if summary.step - step < self.num_steps:
            return None
        self.earlier = (summary.step, loss)
        if loss > earlier * (1 - self.diff_percent / 100):
            return (f"{self.mode} loss {loss:.4g} at step {summary.step} did not decrease by {self.diff_percent}% "
                    f"from {earlier:.4g} at step {step}")
        return None


@dataclass
class Overfit(Rule):
    """The validation loss exceeds the training loss by more than ratio_threshold of it, patience times running."""

    needs: ClassVar[frozenset] = frozenset({"loss", "validation"})
    start_step: int = setting(0, "step from which the rule looks", min=0)
    patience: int = setting(1, "evaluations over the threshold in a row before it fires", min=1)
    ratio_threshold: float = setting(0.1, "largest (validation - training) / training loss", min=0)

    def start(self):
        self.train_losses, self.over = [], 0

    def check_summary(self, summary):
        if summary.step < self.start_step:
            return None
        if summary.mode == "train" and summary.loss is not None:
            self.train_losses.append(summary.loss)
            return None
        if summary.validation_loss is None or not self.train_losses:
            return None
        train = sum(self.train_losses) / len(self.train_losses)
        self.train_losses = []
        ratio = (summary.validation_loss - train) / max(abs(train), 1e-12)
        self.over = self.over + 1 if ratio > self.ratio_threshold else 0
        if self.over >= self.patience:
            return (f"validation loss {summary.validation_loss:.4g} exceeds training loss {train:.4g} by "
                    f"{ratio:.0%} (> {self.ratio_threshold:.0%}) at step {summary.step}")
        return None


@dataclass
class Overtraining(Rule):
    """Neither the training loss (patience_train summaries) nor the validation loss (patience_validation
    evaluations) improved on its best by more than delta."""

    needs: ClassVar[frozenset] = frozenset({"loss", "validation"})
    patience_train: int = setting(5, "training summaries without improvement before it fires", min=1)
    patience_validation: int = setting(10, "evaluations without improvement before it fires", min=1)
    delta: float = setting(0.1, "smallest improvement of a loss that counts as a new best", min=0)

    def start(self):
        self.best = {"train": math.inf, "validation": math.inf}
        self.waited = {"train": 0, "validation": 0}

    def check_summary(self, summary):
        mode, loss = (("train", summary.loss) if summary.mode == "train" else ("validation", summary.validation_loss))
        if loss is None:
            return None
        if self.best[mode] - loss > self.delta or self.best[mode] == math.inf:
            self.best[mode], self.waited[mode] = loss, 0
        else:
            self.waited[mode] += 1
        patience = self.patience_train if mode == "train" else self.patience_validation
        if self.waited[mode] >= patience:
            return (f"{mode} loss has not improved on {self.best[mode]:.4g} by more than {self.delta} for "
                    f"{self.waited[mode]} {'summaries' if mode == 'train' else 'evaluations'} (step {summary.step})")
        return None


@dataclass
class VanishingGradient(Rule):
    """The mean absolute gradient of a weight matrix (embedding tables aside) fell below threshold."""

    needs: ClassVar[frozenset] = frozenset({"gradients"})
    threshold: float = setting(1e-7, "smallest mean absolute gradient of a tensor", min=0)

    def check_summary(self, summary):
        small = {name: value for name, value in summary.gradient_mean_abs.items() if value < self.threshold}
        if small:
            name = min(small, key=small.get)
            return (f"{len(small)} gradient tensor(s) below {self.threshold:g} at step {summary.step}, smallest "
                    f"{name} ({small[name]:.3g})")
        return None


@dataclass
class ExplodingTensor(Rule):
    """A NaN or Inf in the loss, the gradients or the weights."""

    needs: ClassVar[frozenset] = frozenset({"loss", "gradients", "weights"})
    only_nan: bool = setting(False, "flag NaN only, not infinite values")

    def check_summary(self, summary):
        bad = list(summary.nonfinite)
        for name, value in (("loss", summary.loss), ("validation loss", summary.validation_loss)):
            if value is not None and (math.isnan(value) or not self.only_nan and math.isinf(value)):
                bad.insert(0, name)
        if bad:
            return f"NaN/Inf at step {summary.step} in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
        return None


@dataclass
class PoorWeightInitialization(Rule):
    """Over the first `steps` summaries: the per-layer weight variances differ by more than `threshold`
    times, or the gradients are squeezed into less than `distribution_range`."""

    needs: ClassVar[frozenset] = frozenset({"gradients", "weights"})
    threshold: float = setting(10.0, "largest ratio of the largest to the smallest per-layer weight variance", min=1)
    distribution_range: float = setting(0.001, "smallest spread between the 5th and 95th gradient percentiles",
                                        min=0)
    steps: int = setting(10, "summaries from the start that the rule looks at", min=1)

    def start(self):
        self.seen = 0

    def check_summary(self, summary):
        if summary.mode != "train" or self.seen >= self.steps:
            return None
        self.seen += 1
        variances = [v for v in summary.weight_variance.values() if v > 0]
        if variances and max(variances) / min(variances) > self.threshold:
            return (f"per-layer weight variances range from {min(variances):.3g} to {max(variances):.3g} "
                    f"(more than {self.threshold:g} times) at step {summary.step}")
        if summary.gradient_spread is not None and summary.gradient_spread < self.distribution_range:
            return (f"gradients between the 5th and 95th percentiles span {summary.gradient_spread:.3g} "
                    f"(< {self.distribution_range:g}) at step {summary.step}")
        return None


@dataclass
class WeightUpdateRatio(Rule):
    """An optimizer step changed a weight tensor by more than large_threshold or less than small_threshold
    of its norm."""

    needs: ClassVar[frozenset] = frozenset({"updates"})
    large_threshold: float = setting(10.0, "largest update / weight norm ratio", min=0)
    small_threshold: float = setting(1e-8, "smallest update / weight norm ratio", min=0)

    def check(self):
        if self.small_threshold >= self.large_threshold:  # every ratio would be outside: the rule fires at once
            raise ConfigError(f"WeightUpdateRatio: small_threshold {self.small_threshold:g} must be below "
                              f"large_threshold {self.large_threshold:g}; the rule fires when a ratio is outside "
                              f"[small_threshold, large_threshold] (defaults 1e-8 and 10)")

    def check_summary(self, summary):
        for name, ratio in summary.update_ratio.items():
            if ratio > self.large_threshold or ratio < self.small_threshold:
                return (f"update of {name} is {ratio:.3g} of its norm at step {summary.step} (outside "
                        f"[{self.small_threshold:g}, {self.large_threshold:g}])")
        return None


@dataclass
class StalledTraining(Rule):
    """No step completed for `threshold` seconds."""

    threshold: float = setting(1800.0, "seconds without progress", min=0)

    def start(self):
        self.last: float | None = None

    def check_summary(self, summary):
        last, self.last = self.last, summary.time
        if last is not None and summary.time - last > self.threshold:
            return f"no progress for {summary.time - last:.0f}s (> {self.threshold:g}s) before step {summary.step}"
        return None


RULES = {cls.__name__: cls for cls in (LossNotDecreasing, Overfit, Overtraining, VanishingGradient, ExplodingTensor,
                                       PoorWeightInitialization, WeightUpdateRatio, StalledTraining)}


def split_specs(specs: list[str]) -> list[str]:
    """`["A,B:x=1,y=2", "C"]` -> `["A", "B:x=1,y=2", "C"]`: a piece with `=` and no `:` belongs to the rule before."""
    out: list[str] = []
    for piece in (p.strip() for spec in specs for p in spec.split(",")):
        if not piece:
            continue
        if "=" in piece and ":" not in piece and out:
            out[-1] += "," + piece
        else:
            out.append(piece)
    return out


def parse_rule(spec: str) -> Rule:
    """A rule from `NAME` or `NAME:param=value,...`; unknown names and parameters are ConfigErrors."""
    name, _, params = spec.partition(":")
    cls = RULES.get(name.strip())
    if cls is None:
        raise ConfigError(f"--rules: unknown rule {name.strip()!r}; known: {', '.join(RULES)}")
    values = {}
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, equals, value = item.partition("=")
        if not equals:
            raise ConfigError(f"--rules {spec}: give parameters as {name}:param=value,...")
        values[key.strip()] = value.strip()
    return from_flat(cls, values, where=f"--rules {name}")


def parse_rules(specs: list[str]) -> list[Rule]:
    rules = [parse_rule(spec) for spec in split_specs(specs)]
    names = [type(rule).__name__ for rule in rules]
    if len(set(names)) != len(names):
        raise ConfigError(f"--rules lists a rule twice ({', '.join(names)}); give each rule once")
    return rules


# The summaries below import torch where they run: the rules above are also read by `nlpforge train --help` and
# by the settings checks, which should not wait for torch to load.


def layer_norms(named: list[tuple[str, "torch.Tensor"]]) -> dict:
    """L2 norm per layer (the module owning the tensors, named by its path) of named tensors, in one sync."""
    import torch

    if not named:
        return {}
    layers = [name.rpartition(".")[0] or name for name, _ in named]
    index = {layer: i for i, layer in enumerate(dict.fromkeys(layers))}
    # One fused kernel over the list, as clip_grad_norm_ does.
    squares = torch.stack(torch._foreach_norm([t.detach() for _, t in named])).float() ** 2
    where = torch.tensor([index[layer] for layer in layers], device=squares.device)
    totals = torch.zeros(len(index), device=squares.device).index_add_(0, where, squares).sqrt().tolist()
    return dict(zip(index, totals))


def watched_modules(model: "torch.nn.Module") -> list[tuple[str, "torch.nn.Module"]]:
    """The modules whose outputs are summarised: the embeddings, each repeated block (a ModuleList's
    children) and the whole model."""
    import torch

    chosen = []
    for name, module in model.named_modules():
        if name.rpartition(".")[2] == "embeddings":
            chosen.append((name, module))
        elif isinstance(module, torch.nn.ModuleList):
            chosen += [(f"{name}.{i}".lstrip("."), child) for i, child in enumerate(module)]
    return chosen + [("output", model)]


def first_tensor(output) -> "torch.Tensor | None":
    """The tensor a module's output stands for: itself, a tuple's first tensor, or a model output's logits."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = [output["logits"]] if output.get("logits") is not None else list(output.values())
    if isinstance(output, (tuple, list)):
        return next((item for item in output if isinstance(item, torch.Tensor)), None)
    return None


class Debugger:
    """The selected rules, their statuses, and the summaries they need."""

    def __init__(self, rules: list[Rule], interval: int = 1, action: str = "log"):
        self.rules, self.interval, self.action = rules, interval, action
        self.needs = frozenset().union(*(type(rule).needs for rule in rules))
        self.status = {type(rule).__name__: IN_PROGRESS for rule in rules}
        self.reasons: dict[str, str] = {}
        for rule in rules:
            rule.start()
        self.previous_weights: list | None = None
        self.hooks: list = []
        self.activations: dict[str, list] = {}    # watched module -> [(mean, std)] of this step's forward passes

    @classmethod
    def of(cls, specs: list[str], interval: int = 1, action: str = "log") -> "Debugger":
        return cls(parse_rules(specs), interval, action)

    def due(self, step: int) -> bool:
        """Whether the optimizer step numbered `step` (1-based) is summarised."""
        return step % self.interval == 0

    def watch(self, model: "torch.nn.Module") -> None:
        """Attach forward hooks that summarise activations, for the forward passes of a recorded step."""
        if self.hooks:
            return
        for name, module in watched_modules(model):
            self.hooks.append(module.register_forward_hook(
                lambda module, inputs, output, name=name: self._activation(name, output)))

    def _activation(self, name: str, output) -> None:
        import torch

        tensor = first_tensor(output)
        if tensor is not None and tensor.is_floating_point():
            std, mean = torch.std_mean(tensor.detach().float())
            self.activations.setdefault(name, []).append(torch.stack([mean, std]))

    def unwatch(self) -> dict[str, list[float]]:
        """Remove the hooks; the [mean, std] of each watched output, averaged over the step's forward passes."""
        import torch

        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        names, self.activations = self.activations, {}
        if not names:
            return {}
        stats = torch.stack([torch.stack(values).mean(0) for values in names.values()]).tolist()
        return dict(zip(names, stats))

    def before_step(self, model: "torch.nn.Module", step: int, loss: float | None) -> Summary:
        """Gradient statistics (after backward, before clipping and the update), the activations of the step's
        forward passes, and a copy of the weights if updates are needed."""
        import torch

        summary = Summary(step, loss=loss)
        for name, (mean, std) in self.unwatch().items():
            summary.activation_mean[name], summary.activation_std[name] = mean, std
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        summary.gradient_norm = layer_norms([(n, p.grad) for n, p in named if p.grad is not None])
        if "gradients" in self.needs:
            grads = [(n, p.grad.detach()) for n, p in named if p.grad is not None]
            if grads:
                means = torch.stack([g.abs().float().mean() for _, g in grads]).tolist()
                summary.nonfinite += [n for (n, _), m in zip(grads, means) if not math.isfinite(m)]
                # Embedding tables are left out: most of their rows get no gradient from a batch.
                dense = [(i, n, g) for i, (n, g) in enumerate(grads) if g.ndim >= 2 and "embeddings" not in n]
                summary.gradient_mean_abs = {n: means[i] for i, n, _ in dense}
                sample = torch.cat([g.flatten()[:: max(1, g.numel() // 4096)].float() for _, _, g in dense]
                                   or [torch.zeros(0)])
                sample = sample[torch.isfinite(sample)]
                if sample.numel():
                    low, high = torch.quantile(sample, torch.tensor([0.05, 0.95], device=sample.device)).tolist()
                    summary.gradient_spread = high - low
        if "updates" in self.needs:
            self.previous_weights = [(n, p.detach().clone()) for n, p in named]
        return summary

    def after_step(self, model: "torch.nn.Module", summary: Summary) -> list[tuple[str, str]]:
        """Weight statistics after the update, then the rules' verdicts."""
        import torch

        summary.weight_norm = layer_norms(list(model.named_parameters()))
        if "weights" in self.needs:
            weights = [(n, p.detach()) for n, p in model.named_parameters()]
            stats = torch.stack([torch.stack([w.float().abs().sum(), w.float().var() if w.numel() > 1
                                              else w.new_zeros((), dtype=torch.float32)]) for _, w in weights]).tolist()
            summary.nonfinite += [n for (n, _), (total, _) in zip(weights, stats) if not math.isfinite(total)]
            summary.weight_variance = {n: var for (n, w), (_, var) in zip(weights, stats)
                                       if w.ndim >= 2 and "embeddings" not in n}
        if self.previous_weights is not None:
            current = dict(model.named_parameters())
            ratios = torch.stack([torch.linalg.vector_norm(current[n].detach().float() - old.float())
                                  / (torch.linalg.vector_norm(old.float()) + 1e-12)
                                  for n, old in self.previous_weights]).tolist()
            summary.update_ratio = {n: r for (n, _), r in zip(self.previous_weights, ratios)}
            self.previous_weights = None
        return self.observe(summary)

    def observe(self, summary: Summary) -> list[tuple[str, str]]:
        """Feed a summary to every rule still in progress; the (rule, reason) of those that fire now."""
        fired = []
        for rule in self.rules:
            name = type(rule).__name__
            if self.status[name] != IN_PROGRESS:
                continue
            reason = rule.check_summary(summary)
            if reason:
                self.status[name], self.reasons[name] = ISSUES, reason
                fired.append((name, reason))
        return fired

    def finish(self) -> dict:
        """At the end of training: rules that never fired found no issues."""
        for name, status in self.status.items():
            if status == IN_PROGRESS:
                self.status[name] = NO_ISSUES
        return dict(self.status)
