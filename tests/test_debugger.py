"""Debugger rules: each fires on a run or a sequence crafted for it, and stays quiet on a healthy one."""
import json

import pytest
import torch

from conftest import TINY, assert_user_error, run_cli, train_classifier
from nlpforge.errors import ConfigError, TrainingInterrupted
from nlpforge.training import debugger
from nlpforge.training.debugger import ISSUES, NO_ISSUES, Debugger, Summary


def statuses(rules: list[str], summaries: list[Summary]) -> dict:
    run = Debugger.of(rules)
    for summary in summaries:
        run.observe(summary)
    return run.finish()


def train_losses(values, every=1):
    return [Summary(step=(i + 1) * every, loss=v) for i, v in enumerate(values)]


def metric_rows(output) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


# Rules fed crafted summaries


def test_sagemaker_defaults():
    assert debugger.LossNotDecreasing().num_steps == 10
    assert (debugger.Overfit().ratio_threshold, debugger.Overfit().patience) == (0.1, 1)
    overtraining = debugger.Overtraining()
    assert (overtraining.patience_train, overtraining.patience_validation, overtraining.delta) == (5, 10, 0.1)
    assert debugger.VanishingGradient().threshold == 1e-7
    assert debugger.PoorWeightInitialization().threshold == 10.0
    assert (debugger.WeightUpdateRatio().large_threshold, debugger.WeightUpdateRatio().small_threshold) == (10, 1e-8)


def test_loss_not_decreasing():
    assert statuses(["LossNotDecreasing:num_steps=2"], train_losses([1.0, 0.9, 0.8, 0.7, 0.6]))["LossNotDecreasing"] \
        == NO_ISSUES
    assert statuses(["LossNotDecreasing:num_steps=2"], train_losses([1.0, 0.9, 1.0, 1.1, 1.2]))["LossNotDecreasing"] \
        == ISSUES
    # diff_percent: a 1% decrease is not the 5% asked for
    assert statuses(["LossNotDecreasing:num_steps=1,diff_percent=5"], train_losses([1.0, 0.99]))["LossNotDecreasing"] \
        == ISSUES


def test_overfit_and_overtraining_on_crafted_losses():
    def run(validation_losses, train=(0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01)):
        summaries = []
        for epoch, validation in enumerate(validation_losses):
            summaries += train_losses(train[epoch * 2:epoch * 2 + 2])
            summaries.append(Summary(step=epoch, mode="eval", validation_loss=validation))
        return statuses(["Overfit", "Overtraining:patience_train=20,patience_validation=3"], summaries)

    assert run([0.46, 0.26, 0.08, 0.037, 0.016]) == {"Overfit": NO_ISSUES, "Overtraining": NO_ISSUES}
    found = run([0.5, 0.4, 0.45, 0.5, 0.6])    # validation loss rises while training loss falls
    assert found == {"Overfit": ISSUES, "Overtraining": ISSUES}
    # Overtraining on the training loss alone: 5 summaries without a 0.1 improvement
    flat = statuses(["Overtraining"], train_losses([0.5, 0.45, 0.44, 0.43, 0.42, 0.41]))
    assert flat["Overtraining"] == ISSUES
    assert statuses(["Overtraining"], train_losses([0.9, 0.7, 0.5, 0.3, 0.1, 0.05]))["Overtraining"] == NO_ISSUES


def test_exploding_tensor_and_weight_update_ratio_and_stall():
    assert statuses(["ExplodingTensor"], train_losses([0.5, float("nan")]))["ExplodingTensor"] == ISSUES
    assert statuses(["ExplodingTensor"], [Summary(1, loss=0.5, nonfinite=["layer.weight"])])["ExplodingTensor"] \
        == ISSUES
    assert statuses(["ExplodingTensor"], train_losses([0.5, 0.4]))["ExplodingTensor"] == NO_ISSUES
    ratios = lambda r: [Summary(1, update_ratio={"w": 1e-3}), Summary(2, update_ratio={"w": r})]  # noqa: E731
    assert statuses(["WeightUpdateRatio"], ratios(1e-3))["WeightUpdateRatio"] == NO_ISSUES
    assert statuses(["WeightUpdateRatio"], ratios(1e-9))["WeightUpdateRatio"] == ISSUES
    assert statuses(["WeightUpdateRatio"], ratios(50.0))["WeightUpdateRatio"] == ISSUES
    steps = [Summary(1, time=100.0), Summary(2, time=110.0), Summary(3, time=200.0)]
    assert statuses(["StalledTraining:threshold=60"], steps[:2])["StalledTraining"] == NO_ISSUES
    assert statuses(["StalledTraining:threshold=60"], steps)["StalledTraining"] == ISSUES


def small_model_step(scale: float, run: Debugger):
    """One optimizer step of a small MLP whose weights are multiplied by `scale`; the rules' verdicts."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 2))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(scale)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    features, labels = torch.randn(32, 16), torch.randint(0, 2, (32,))
    loss = torch.nn.functional.cross_entropy(model(features), labels)
    loss.backward()
    summary = run.before_step(model, 1, loss.item())
    optimizer.step()
    return run.after_step(model, summary)


def test_weights_scaled_by_1e8_vanish_and_are_poorly_initialised():
    rules = ["VanishingGradient", "PoorWeightInitialization", "ExplodingTensor", "WeightUpdateRatio"]
    healthy = Debugger.of(rules)
    assert small_model_step(1.0, healthy) == []
    scaled = Debugger.of(rules)
    fired = dict(small_model_step(1e-8, scaled))
    assert {"VanishingGradient", "PoorWeightInitialization"} <= set(fired)
    assert "ExplodingTensor" not in fired
    assert "below 1e-07" in fired["VanishingGradient"]


# Selection and errors


def test_rule_specs_are_parsed_with_parameters():
    rules = debugger.parse_rules(["LossNotDecreasing:num_steps=5,diff_percent=2,VanishingGradient", "Overfit"])
    assert [type(r).__name__ for r in rules] == ["LossNotDecreasing", "VanishingGradient", "Overfit"]
    assert (rules[0].num_steps, rules[0].diff_percent) == (5, 2.0)


@pytest.mark.parametrize("spec, message", [
    ("LossNotDecreasin", "unknown rule 'LossNotDecreasin'; known: LossNotDecreasing, Overfit"),
    ("LossNotDecreasing:steps=3", "unknown setting(s) steps; known: diff-percent, mode, num-steps"),
    ("LossNotDecreasing:num_steps=0", "num_steps must be at least 1"),
    ("Overfit,Overfit", "lists a rule twice"),
])
def test_bad_rule_specs(spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        debugger.parse_rules([spec])


def test_unknown_rule_is_one_cli_line(toy_files, tmp_path):
    train, validation = toy_files
    result = run_cli(["train", "text-classification", "--train", train, "--validation", validation,
                      "--output", tmp_path / "m", "--model", "bert-tiny", "--rules", "LossNotDecreasing,Nope"])
    assert_user_error(result, "unknown rule 'Nope'; known: LossNotDecreasing")
    assert not (tmp_path / "m").exists()


# Through the real training loop


def test_healthy_fine_tune_finds_no_issues(toy_files, tmp_path):
    train, validation = toy_files
    rules = ["LossNotDecreasing", "VanishingGradient", "ExplodingTensor", "WeightUpdateRatio", "StalledTraining",
             "Overfit", "Overtraining", "PoorWeightInitialization:distribution_range=1e-6"]
    result = train_classifier(train=str(train), validation=str(validation), output=str(tmp_path / "m"),
                              **dict(TINY, epochs=2, lr_schedule="constant"), rules=rules, rules_interval=5)
    assert result.metrics["validation_accuracy"] > 0.9
    assert result.rules == {type(r).__name__: NO_ISSUES for r in debugger.parse_rules(rules)}
    rows = [row for row in metric_rows(tmp_path / "m") if "rule" in row]
    assert {(row["rule"], row["rule_status"]) for row in rows} >= {("VanishingGradient", "InProgress"),
                                                                   ("VanishingGradient", NO_ISSUES)}


def test_learning_rate_near_zero_loss_not_decreasing(toy_files, tmp_path):
    train, validation = toy_files
    lines = []
    result = train_classifier(log=lines.append, train=str(train), validation=str(validation),
                              output=str(tmp_path / "m"), **dict(TINY, epochs=2, learning_rate=1e-12),
                              rules=["LossNotDecreasing:num_steps=3", "ExplodingTensor"], rules_interval=3)
    assert result.rules == {"LossNotDecreasing": ISSUES, "ExplodingTensor": NO_ISSUES}
    assert any(line.startswith("rule LossNotDecreasing: IssuesFound: train loss") for line in lines)
    fired = [row for row in metric_rows(tmp_path / "m") if row.get("rule_status") == ISSUES]
    assert [row["rule"] for row in fired] == ["LossNotDecreasing"] and "did not decrease" in fired[0]["reason"]


def test_huge_learning_rate_explodes_and_stop_keeps_a_checkpoint(toy_files, tmp_path):
    train, validation = toy_files
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(TrainingInterrupted, match=r"stopped by Debugger rule ExplodingTensor \(NaN/Inf at step "
                                                  r"\d+ in .*\) at step \d+; checkpoint .*resume with --resume auto"):
        train_classifier(train=str(train), validation=str(validation), output=str(tmp_path / "m"),
                         **dict(TINY, learning_rate=1e30, warmup_ratio=0.0), max_grad_norm=0,
                         checkpoint_dir=str(checkpoints), rules=["ExplodingTensor"], rules_interval=1,
                         rules_action="stop")
    assert any(checkpoints.iterdir())
    assert not (tmp_path / "m").exists()
