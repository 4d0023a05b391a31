"""Bad input to the monitor, the tuner and the SDK's built-in estimators: each gets an nlpforge error that names
the problem, before any work is done."""
import json
import re

import pytest

from conftest import assert_user_error, run_cli, toy_rows, write_csv
from nlpforge.errors import ConfigError, DataError, ModelNotFoundError, TuningError
from nlpforge.monitoring.run import BaselineError, BaselineSettings, MonitorRunSettings, monitor_run, suggest_baseline
from nlpforge.sdk import Estimator, TextClassifier
from nlpforge.tuning import ContinuousParameter, HyperparameterTuner, IntegerParameter
from test_tuning_tuner import no_tracking  # noqa: F401  (an autouse fixture: no MLflow records)


@pytest.fixture
def baseline(tmp_path):
    """(baseline folder, the data file it was made from) of 40 toy texts, no model."""
    data = write_csv(tmp_path / "tc.csv", toy_rows(40))
    suggest_baseline(BaselineSettings.of(data=str(data), output=str(tmp_path / "bl"), sample_size=50,
                                         embedding_sample=20))
    return tmp_path / "bl", data


def edit(path, change) -> None:
    """Rewrite a JSON file with `change` applied to its content (`change` returns the new content or None)."""
    content = json.loads(path.read_text())
    changed = change(content)
    path.write_text(json.dumps(content if changed is None else changed))


def distribution(constraints) -> dict:
    return constraints["monitoring_config"]["distribution_constraints"]


# -- monitor run: a hand-edited baseline ------------------------------------------------------------

@pytest.mark.parametrize("name, change, message", [
    ("constraints.json", lambda c: [], "constraints.json: holds [], not a JSON object"),
    ("statistics.json", lambda s: {}, "statistics.json: features is missing (it must be a list of features)"),
    ("constraints.json", lambda c: distribution(c).update(comparison_threshold="0.2x"),
     'constraints.json: monitoring_config.distribution_constraints.comparison_threshold is "0.2x", not a number'),
    ("constraints.json", lambda c: c["features"][1].update(completeness="high"),
     'constraints.json: features[1].completeness is "high", not a number between 0 and 1'),
    ("constraints.json", lambda c: c["monitoring_config"].update(distribution_constraints=None),
     "constraints.json: monitoring_config.distribution_constraints is null, not an object"),
    ("constraints.json", lambda c: distribution(c).update(comparison_method="Fancy"),
     'comparison_method is "Fancy", not Robust or Simple'),
    ("statistics.json", lambda s: s["features"][1]["numerical_statistics"]["distribution"]["kll"]["buckets"][2]
     .update(count="x"), 'features[1].numerical_statistics.distribution.kll.buckets[2].count is "x", not a number'),
    ("statistics.json", lambda s: s["features"][1]["numerical_statistics"].update(common={}),
     "features[1].numerical_statistics.common.num_present is missing"),
])
def test_a_hand_edited_baseline_is_refused_naming_the_file_and_key(baseline, name, change, message):
    folder, data = baseline
    edit(folder / name, change)
    with pytest.raises(BaselineError, match=re.escape(message) + ".*write the baseline again"):
        monitor_run(MonitorRunSettings.of(baseline=str(folder), data=str(data), output=str(folder.parent / "r"),
                                          permutations=20))
    assert not (folder.parent / "r").exists()


def test_a_hand_edited_baseline_is_one_line_from_the_cli(baseline):
    folder, data = baseline
    edit(folder / "constraints.json", lambda c: distribution(c).update(comparison_threshold="0.2x"))
    result = run_cli(["monitor", "run", "--baseline", folder, "--data", data, "--output", folder.parent / "r",
                      "--permutations", 20])
    assert_user_error(result, "comparison_threshold is \"0.2x\", not a number between 0 and 1")


def test_sagemakers_simple_comparison_method_is_accepted(baseline):
    folder, data = baseline
    edit(folder / "constraints.json", lambda c: distribution(c).update(comparison_method="Simple",
                                                                         comparison_threshold=1))
    report = monitor_run(MonitorRunSettings.of(baseline=str(folder), data=str(data),
                                               output=str(folder.parent / "r"), permutations=20))
    assert report["status"] == "no violations"


def test_permutations_have_a_maximum():
    with pytest.raises(ConfigError, match="permutations must be between 20 and 10000, not 100000000"):
        MonitorRunSettings.of(baseline="bl", data="tc.csv", output="r", permutations=100_000_000)


def test_a_baseline_of_a_text_column_empty_in_every_row_is_refused(tmp_path):
    data = write_csv(tmp_path / "tc.csv", [{"text": "", "label": "pos"}, {"text": "  ", "label": "neg"}])
    with pytest.raises(DataError, match="text column 'text' is empty in every row; name the column"):
        suggest_baseline(BaselineSettings.of(data=str(data), output=str(tmp_path / "bl")))
    assert not (tmp_path / "bl").exists()


# -- the tuner ----------------------------------------------------------------------------------------

METRICS = [{"Name": "acc", "Regex": r"acc=([0-9.]+)"}]


@pytest.fixture
def script_estimator(tmp_path):
    path = tmp_path / "train.py"
    path.write_text("print('acc=0.5')\n")
    return Estimator(entry_point=str(path), jobs_root=str(tmp_path / "jobs"))


@pytest.mark.parametrize("seed", [-1, 2**40])
def test_a_random_seed_numpy_cannot_take_is_refused_when_the_tuner_is_made(script_estimator, seed):
    with pytest.raises(TuningError, match=f"random_seed must be between 0 and 4294967295, not {seed}"):
        HyperparameterTuner(script_estimator, "acc", {"q": IntegerParameter(1, 2)}, metric_definitions=METRICS,
                            max_jobs=1, random_seed=seed)


def test_a_grid_too_large_to_run_is_refused_before_it_is_listed(script_estimator, monkeypatch):
    monkeypatch.setattr(IntegerParameter, "grid", lambda self, name: pytest.fail("the grid was listed"))
    with pytest.raises(TuningError, match="the grid has 2000000002 points, more than the 10000 .* narrow the "
                                          "ranges or use the Random or Bayesian strategy"):
        HyperparameterTuner(script_estimator, "acc", {"seed": IntegerParameter(0, 10**9),
                                                      "q": IntegerParameter(1, 2)},
                            metric_definitions=METRICS, strategy="Grid")


@pytest.mark.parametrize("low, high", [(1, 2), (1, 3)])
def test_a_continuous_range_on_an_integer_setting_is_refused_when_the_tuner_is_made(tmp_path, low, high):
    est = TextClassifier(base_model="bert-tiny", jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(TuningError, match="hyperparameter range 'epochs': .*epochs must be an integer.*so use "
                                          "IntegerParameter for an integer setting"):
        HyperparameterTuner(est, "validation_accuracy", {"epochs": ContinuousParameter(low, high)}, max_jobs=2)


# -- built-in estimators --------------------------------------------------------------------------------

def test_fit_without_a_train_channel_shows_a_call_that_runs(tmp_path):
    est = TextClassifier(base_model="bert-tiny", jobs_root=str(tmp_path / "jobs"))
    validation = write_csv(tmp_path / "val.csv", toy_rows(4))
    with pytest.raises(ConfigError) as caught:
        est.fit({"validation": str(validation)}, logs=False)
    assert caught.value.message.endswith("e.g. fit({'train': 'train.csv'})")


@pytest.mark.parametrize("base_model, message", [
    ("nope", "base_model 'nope': not an alias and not a folder; give one of minilm-l6"),
    (5, "base_model 5: not an alias and not a folder"),
])
def test_a_base_model_that_is_no_alias_nor_folder_is_refused_when_given(tmp_path, monkeypatch, base_model,
                                                                         message):
    with pytest.raises(ModelNotFoundError, match=message):
        TextClassifier(base_model=base_model, jobs_root=str(tmp_path / "jobs"))
    folder = tmp_path / "my-model"
    folder.mkdir()
    est = TextClassifier(base_model=str(folder), jobs_root=str(tmp_path / "jobs"))
    assert est.hyperparameters()["model"] == str(folder)
    monkeypatch.chdir(tmp_path)  # a relative folder reaches the job, which runs in its own folder, as absolute
    assert TextClassifier(base_model="my-model", jobs_root="jobs").hyperparameters()["model"] == str(folder)
    # On SSH hosts the folder is theirs: it is not looked for here.
    remote = TextClassifier(base_model="/on/the/hosts/model", jobs_root="jobs", instance_count=2,
                            ssh_hosts=["gpu-1", "gpu-2"])
    assert remote.hyperparameters()["model"] == "/on/the/hosts/model"


def test_a_storage_that_is_no_url_or_has_no_driver_is_named(script_estimator):
    from nlpforge.tuning.tuner import optuna_module

    with pytest.raises(TuningError, match="storage must be a database URL"):
        HyperparameterTuner(script_estimator, "acc", {"q": IntegerParameter(1, 2)}, metric_definitions=METRICS,
                            max_jobs=1, storage=5)
    tuner = HyperparameterTuner(script_estimator, "acc", {"q": IntegerParameter(1, 2)}, metric_definitions=METRICS,
                                max_jobs=1, storage="postgresql+psycopg://u@127.0.0.1:1/db")  # psycopg 3: absent
    with pytest.raises(TuningError, match="its database driver is not installed .*postgresql\\+psycopg2://"):
        tuner.storage_backend(optuna_module())


def test_a_database_server_that_never_answers_is_given_up_on(script_estimator, monkeypatch):
    import socket
    import time

    from nlpforge.tuning import tuner as tuner_module

    monkeypatch.setattr(tuner_module, "DB_CONNECT_TIMEOUT", 2)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections and never says a word
    port = silent.getsockname()[1]
    tuner = HyperparameterTuner(script_estimator, "acc", {"q": IntegerParameter(1, 2)}, metric_definitions=METRICS,
                                max_jobs=1, storage=f"postgresql+psycopg2://u@127.0.0.1:{port}/db")
    started = time.monotonic()
    try:
        with pytest.raises(TuningError, match="cannot open the tuning storage .*timeout"):
            tuner.storage_backend(tuner_module.optuna_module())
    finally:
        silent.close()
    assert time.monotonic() - started < 30
