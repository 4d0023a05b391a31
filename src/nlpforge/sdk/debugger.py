"""SageMaker Debugger's rule API for the estimators: `rules=[Rule.sagemaker(rule_configs.loss_not_decreasing())]`.

    from nlpforge.sdk import ProfilerRule, Rule, TextClassifier, rule_configs

    est = TextClassifier(hyperparameters={"epochs": 2},
                         rules=[Rule.sagemaker(rule_configs.loss_not_decreasing()),
                                Rule.sagemaker(rule_configs.vanishing_gradient(),
                                               rule_parameters={"threshold": "1e-6"}),
                                ProfilerRule.sagemaker(rule_configs.ProfilerReport())])
    est.fit({"train": "train.csv"})
    est.latest_training_job.rule_job_summary()
    # [{"RuleConfigurationName": "LossNotDecreasing", "RuleEvaluationStatus": "NoIssuesFound", ...}, ...]

A built-in estimator hands the rules to the training engine (its `rules` setting, nlpforge.training.debugger),
which evaluates them on its own tensors. A script-mode job's rules are recorded, and reported as not
evaluated: the engine cannot see the tensors of a script's own loop. Profiler rules are accepted and ignored.
"""
import logging

from nlpforge.errors import ConfigError
from nlpforge.sdk.jobs import check_dict

log = logging.getLogger("nlpforge.sdk")

# rule_configs function -> the rule's name (SageMaker's names for the rules nlpforge evaluates)
BUILT_IN_RULES = {
    "loss_not_decreasing": "LossNotDecreasing", "overfit": "Overfit", "overtraining": "Overtraining",
    "vanishing_gradient": "VanishingGradient", "exploding_tensor": "ExplodingTensor",
    "poor_weight_initialization": "PoorWeightInitialization", "weight_update_ratio": "WeightUpdateRatio",
    "stalled_training_rule": "StalledTraining",
}

RULES_BY_SPELLING = {spelling.replace("_", "").lower(): name for function, name in BUILT_IN_RULES.items()
                     for spelling in (function, name)}

# What rule_configs.<rule>() holds -> (the class whose sagemaker() takes it, an example)
CONFIGURATION_KINDS = {"DebugRuleConfiguration": ("Rule", "loss_not_decreasing()"),
                       "ProfilerRuleConfiguration": ("ProfilerRule", "ProfilerReport()")}


def rule_configuration(base_config, kind: str) -> dict:
    """The `kind` part of a `rule_configs.<rule>()`, as Rule.sagemaker or ProfilerRule.sagemaker takes it."""
    taker, example = CONFIGURATION_KINDS[kind]
    config = base_config.get(kind) if isinstance(base_config, dict) else None
    if isinstance(config, dict) and (kind != "DebugRuleConfiguration"
                                     or isinstance(config.get("RuleParameters"), dict)
                                     and "rule_to_invoke" in config["RuleParameters"]):
        return config
    for other, (other_taker, _) in CONFIGURATION_KINDS.items():
        if other != kind and isinstance(base_config, dict) and isinstance(base_config.get(other), dict):
            raise ConfigError(f"{base_config[other].get('RuleConfigurationName')} is a rule for "
                              f"{other_taker}.sagemaker, not {taker}.sagemaker")
    raise ConfigError(f"{taker}.sagemaker takes a rule configuration such as rule_configs.{example}, not "
                      f"{base_config!r}")


def _config(name: str) -> dict:
    return {"DebugRuleConfiguration": {"RuleConfigurationName": name, "RuleParameters": {"rule_to_invoke": name}}}


class _RuleConfigs:
    """`rule_configs.loss_not_decreasing()` and its siblings: SageMaker's built-in rule configurations."""

    def __getattr__(self, attribute: str):
        # SageMaker's functions are snake_case; a rule's own name (LossNotDecreasing) is the same rule, not a
        # profiler rule.
        rule = RULES_BY_SPELLING.get(attribute.replace("_", "").lower())
        if rule is not None:
            return lambda: _config(rule)
        if attribute[:1].isupper():  # profiler rules (ProfilerReport, LowGPUUtilization, ...): accepted, ignored
            return lambda **_: {"ProfilerRuleConfiguration": {"RuleConfigurationName": attribute}}
        raise AttributeError(f"rule_configs has no rule {attribute!r}; nlpforge evaluates "
                             f"{', '.join(f'{f}()' for f in BUILT_IN_RULES)}")

    def __dir__(self):
        return list(BUILT_IN_RULES)


rule_configs = _RuleConfigs()


class Rule:
    """A Debugger rule selected for a training job (SageMaker's `sagemaker.debugger.Rule`)."""

    def __init__(self, name: str, parameters: dict):
        self.name, self.rule_parameters = name, parameters

    @classmethod
    def sagemaker(cls, base_config: dict, name: str | None = None, container_local_output_path=None,
                  s3_output_path=None, other_trials_s3_input_paths=None, rule_parameters: dict | None = None,
                  collections_to_save=None, actions=None) -> "Rule":
        """A built-in rule from `rule_configs.<rule>()`, its parameters overridden by `rule_parameters`."""
        config = rule_configuration(base_config, "DebugRuleConfiguration")
        rule = config["RuleParameters"]["rule_to_invoke"]
        if not isinstance(rule, str) or not rule or any(mark in rule for mark in ",=:"):
            raise ConfigError(f"rule_to_invoke {rule!r} must be one rule's name; take the configuration from "
                              "rule_configs, e.g. Rule.sagemaker(rule_configs.loss_not_decreasing()), and give "
                              "each rule its own Rule.sagemaker")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"name {name!r} must be a string naming the rule, e.g. 'LossNotDecreasing'")
        parameters = {k: v for k, v in config["RuleParameters"].items() if k != "rule_to_invoke"}
        parameters.update(check_dict(rule_parameters, "rule_parameters", "{'threshold': '1e-6'}"))
        for key, value in parameters.items():
            # The engine reads a rule as `Name:key=value,...`: these characters would add parameters of their own.
            if any(mark in f"{key}{value}" for mark in ",=:"):
                raise ConfigError(f"rule parameter {key}={value!r} of {rule}: names and values cannot hold ',', '=' "
                                  "or ':'; give each parameter as its own key of rule_parameters")
        made = cls(name or rule, {"rule_to_invoke": rule, **parameters})
        from nlpforge.training.debugger import parse_rule

        parse_rule(made.spec)  # unknown rules and parameters, and parameters that contradict, are refused now
        return made

    @property
    def spec(self) -> str:
        """The rule as the training engine's --rules reads it: `Name` or `Name:param=value,...`."""
        parameters = {k: v for k, v in self.rule_parameters.items() if k != "rule_to_invoke"}
        rule = self.rule_parameters["rule_to_invoke"]
        return rule + (":" + ",".join(f"{k}={v}" for k, v in parameters.items()) if parameters else "")

    def __repr__(self):
        return f"Rule({self.spec!r})"


class ProfilerRule:
    """SageMaker's profiler rules: accepted so that notebooks run unchanged; nothing profiles here."""

    def __init__(self, name: str):
        self.name = name

    @classmethod
    def sagemaker(cls, base_config: dict, name: str | None = None, **_) -> "ProfilerRule":
        config = rule_configuration(base_config, "ProfilerRuleConfiguration")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"name {name!r} must be a string naming the rule, e.g. 'ProfilerReport'")
        return cls(name or config.get("RuleConfigurationName", "ProfilerReport"))


def rule_specs(rules) -> list[str]:
    """The engine's rule specs of an estimator's `rules=[...]`; profiler rules are dropped with a log line."""
    if rules is not None and not isinstance(rules, (list, tuple)):
        raise ConfigError(f"rules takes a list, such as rules=[Rule.sagemaker(rule_configs.overfit())], not {rules!r}")
    specs = []
    for rule in rules or []:
        if isinstance(rule, ProfilerRule):
            log.info("profiler rule %s is accepted and ignored: nlpforge does not profile", rule.name)
        elif isinstance(rule, Rule):
            specs.append(rule.spec)
        else:
            raise ConfigError(f"rules takes Rule.sagemaker(rule_configs.<rule>()) objects, not {rule!r}")
    if specs:
        from nlpforge.training.debugger import parse_rules

        parse_rules(specs)  # unknown rules and parameters are refused now, not when the job runs
    return specs
