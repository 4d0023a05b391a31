"""Tuning: trials are training jobs; the best one is picked, bad ones are pruned, an interrupted tuner resumes."""
import textwrap

import pytest

from conftest import toy_rows, write_csv
from nlpforge.errors import TuningError
from nlpforge.sdk import Estimator, TextClassifier
from nlpforge.tuning import CategoricalParameter, ContinuousParameter, HyperparameterTuner, IntegerParameter

# Prints a made-up validation accuracy that climbs towards --quality over 12 steps.
SCRIPT = '''
import argparse, os, time
parser = argparse.ArgumentParser()
parser.add_argument("--quality", type=float)
parser.add_argument("--steps", type=int, default=12)
args = parser.parse_args()
for step in range(1, args.steps + 1):
    time.sleep(0.05)
    print(f"step {step}: acc={args.quality * step / args.steps:.4f}", flush=True)
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w").write(str(args.quality))
'''
METRICS = [{"Name": "validation:accuracy", "Regex": r"acc=([0-9.]+)"}]


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch):
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")


@pytest.fixture
def script_estimator(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return Estimator(entry_point=str(path), jobs_root=str(tmp_path / "jobs"))


def test_three_trial_tuning_of_the_builtin_task_picks_the_best_trial(tmp_path):
    train = write_csv(tmp_path / "train.csv", toy_rows(80, seed=1))
    validation = write_csv(tmp_path / "val.csv", toy_rows(20, seed=2))
    est = TextClassifier(base_model="bert-tiny", jobs_root=str(tmp_path / "jobs"),
                         hyperparameters={"epochs": 5, "batch-size": 8, "max-seq-length": 16, "threads": 1})
    tuner = HyperparameterTuner(est, "validation_accuracy",
                                {"learning-rate": CategoricalParameter([1e-5, 3e-3, 1e-2])}, strategy="Grid",
                                max_parallel_jobs=3)
    assert tuner.max_jobs == 3  # the grid's size
    tuner.fit({"train": str(train), "validation": str(validation)}, job_name="stars-tuning")
    frame = tuner.analytics().dataframe()
    assert len(frame) == 3 and set(frame["TrainingJobStatus"]) == {"Completed"}
    assert sorted(frame["learning-rate"]) == [1e-5, 3e-3, 1e-2]
    best = frame.loc[frame["FinalObjectiveValue"].idxmax()]
    assert tuner.best_training_job() == best["TrainingJobName"]
    assert best["FinalObjectiveValue"] >= 0.9  # one learning rate does learn the separable toy task
    assert (frame["FinalObjectiveValue"] < best["FinalObjectiveValue"]).any()
    chosen = tuner.best_estimator()
    assert chosen.latest_training_job.name == best["TrainingJobName"]
    assert chosen.model_data.endswith("/output/model.tar.gz")
    assert tuner.describe()["BestTrainingJob"]["TrainingJobName"] == best["TrainingJobName"]


def test_early_stopping_prunes_trials_below_the_median(script_estimator):
    tuner = HyperparameterTuner(script_estimator, "validation:accuracy",
                                {"quality": CategoricalParameter([0.9, 0.85, 0.15, 0.1])}, metric_definitions=METRICS,
                                strategy="Grid", early_stopping_type="Auto", random_seed=3)
    tuner.fit(job_name="pruning")
    frame = tuner.analytics().dataframe()
    pruned = frame[frame["TrialState"] == "PRUNED"]
    assert len(pruned) >= 1
    assert set(pruned["quality"]) <= {0.15, 0.1}
    assert set(pruned["TrainingJobStatus"]) == {"Stopped"}
    for name in pruned["TrainingJobName"]:
        log = (script_estimator.jobs_root / name / "logs" / "training.log").read_text()
        assert "early stopping" in log and "step 12:" not in log  # stopped before the end
    assert frame.loc[frame["FinalObjectiveValue"].idxmax(), "quality"] == 0.9


def test_an_interrupted_tuning_job_resumes(script_estimator):
    import optuna

    ranges = {"quality": ContinuousParameter(0.1, 0.9), "steps": IntegerParameter(2, 4)}
    first = HyperparameterTuner(script_estimator, "validation:accuracy", ranges, metric_definitions=METRICS,
                                strategy="Random", max_jobs=2, random_seed=1)
    first.fit(job_name="resumable")
    # The tuner dies while a third trial runs: the study keeps a RUNNING trial.
    study = first.study("resumable")
    crashed = study.ask({"quality": optuna.distributions.FloatDistribution(0.1, 0.9),
                         "steps": optuna.distributions.IntDistribution(2, 4)})
    again = HyperparameterTuner(script_estimator, "validation:accuracy", ranges, metric_definitions=METRICS,
                                strategy="Random", max_jobs=3, random_seed=1)
    again.fit(job_name="resumable")
    frame = again.analytics().dataframe()
    assert len(frame) == 3 and set(frame["TrainingJobStatus"]) == {"Completed"}
    assert crashed.params["quality"] in set(frame["quality"])  # the interrupted trial ran again
    assert again.best_training_job() == frame.loc[frame["FinalObjectiveValue"].idxmax(), "TrainingJobName"]


@pytest.mark.parametrize("strategy", ["Bayesian", "Hyperband"])
def test_bayesian_and_hyperband_run_parallel_trials_and_pick_the_best(script_estimator, strategy):
    tuner = HyperparameterTuner(script_estimator, "validation:accuracy",
                                {"quality": ContinuousParameter(0.05, 0.95), "steps": IntegerParameter(2, 4)},
                                metric_definitions=METRICS, strategy=strategy, max_jobs=4, max_parallel_jobs=2,
                                random_seed=0)
    tuner.fit(job_name=f"{strategy.lower()}-search")
    frame = tuner.analytics().dataframe()
    assert len(frame) == 4 and set(frame["TrialState"]) <= {"COMPLETE", "PRUNED"}
    complete = frame[frame["TrialState"] == "COMPLETE"]
    # The objective is the last accuracy printed, which is --quality itself.
    assert list(complete["FinalObjectiveValue"].round(4)) == list(complete["quality"].round(4))
    assert tuner.best_training_job() == complete.loc[complete["FinalObjectiveValue"].idxmax(), "TrainingJobName"]


@pytest.mark.parametrize("make, message", [
    (lambda: ContinuousParameter(0.5, 0.1), "min_value 0.5 must be below max_value 0.1"),
    (lambda: ContinuousParameter(0, 1, scaling_type="Logarithmic"), "Logarithmic range needs min_value > 0"),
    (lambda: ContinuousParameter("a", 1), "ContinuousParameter needs numbers"),
    (lambda: ContinuousParameter(0.1, 1, scaling_type="Exponential"), "scaling_type must be one of"),
    (lambda: IntegerParameter(1.5, 3), "IntegerParameter needs whole numbers"),
    (lambda: CategoricalParameter([]), "at least one value"),
    (lambda: CategoricalParameter([16, 16]), "values repeat"),
])
def test_malformed_ranges_get_clear_errors(make, message):
    with pytest.raises(TuningError, match=message):
        make()


@pytest.mark.parametrize("settings, message", [
    (dict(hyperparameter_ranges={"lr": (0.1, 0.2)}), "give ContinuousParameter(min, max)"),
    (dict(hyperparameter_ranges={}), "non-empty dict"),
    (dict(strategy="Grid"), "the Grid strategy needs CategoricalParameter or IntegerParameter"),
    (dict(objective_metric_name="loss"), "objective metric 'loss' has no metric definition"),
    (dict(strategy="Annealing"), "strategy must be one of"),
    (dict(max_jobs=None), "max_jobs is required with the Bayesian strategy"),
])
def test_bad_tuner_arguments_get_clear_errors(script_estimator, settings, message):
    arguments = dict(objective_metric_name="validation:accuracy", metric_definitions=METRICS, max_jobs=2,
                     hyperparameter_ranges={"quality": ContinuousParameter(0.1, 0.9)})
    arguments.update(settings)
    with pytest.raises(TuningError, match=message.replace("(", r"\(").replace(")", r"\)")):
        HyperparameterTuner(script_estimator, **arguments)


def test_ranges_of_a_builtin_estimator_must_name_its_settings(tmp_path):
    est = TextClassifier(base_model="bert-tiny", jobs_root=str(tmp_path / "jobs"))
    with pytest.raises(TuningError, match="TextClassifier has no hyperparameter learning-rat"):
        HyperparameterTuner(est, "validation_accuracy", {"learning-rat": ContinuousParameter(1e-5, 1e-3)},
                            max_jobs=2)


def test_a_trial_another_tuner_is_about_to_claim_is_not_taken_for_a_dead_ones(script_estimator):
    import threading

    import optuna

    tuner = HyperparameterTuner(script_estimator, "validation:accuracy", {"quality": ContinuousParameter(0.1, 0.9)},
                                metric_definitions=METRICS, strategy="Random", max_jobs=3)
    study = tuner.study("claims")
    claimed, dead = study.ask(), study.ask()
    # The other tuner claims its trial a moment after asking, while this one looks for dead tuners' trials.
    timer = threading.Timer(0.3, study._storage.set_trial_user_attr, (claimed._trial_id, "tuner", "other:1:x"))
    timer.start()
    assert tuner.untagged_trials(study, optuna) == [dead._trial_id]
    timer.join()


def test_a_trial_failed_by_another_tuner_before_it_is_claimed_is_asked_again(script_estimator, monkeypatch):
    import optuna

    tuner = HyperparameterTuner(script_estimator, "validation:accuracy", {"quality": ContinuousParameter(0.1, 0.9)},
                                metric_definitions=METRICS, strategy="Random", max_jobs=3)
    study = tuner.study("lost-claim")
    ask, lost = study.ask, []

    def ask_then_lose_it(*args, **kwargs):  # another tuner fails and requeues the trial before it is claimed
        trial = ask(*args, **kwargs)
        if not lost:
            lost.append(trial.number)
            tuner.fail_and_retry(study, trial._trial_id, optuna)
        return trial

    monkeypatch.setattr(study, "ask", ask_then_lose_it)
    trial = tuner.next_trial(study, optuna)
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {lost[0]: "FAIL", trial.number: "RUNNING"} and trial.number != lost[0]
    assert study.get_trials()[trial.number].user_attrs["tuner"] == tuner.tuner_id
    assert study.get_trials()[trial.number].system_attrs["retry_history"] == [lost[0]]
