"""HyperparameterTuner: SageMaker's automatic model tuning, on Optuna, with every trial a training job.

    tuner = HyperparameterTuner(est, objective_metric_name="validation:accuracy",
                                hyperparameter_ranges={"learning-rate": ContinuousParameter(1e-5, 1e-3, "Logarithmic"),
                                                       "batch-size": CategoricalParameter([16, 32])},
                                metric_definitions=[{"Name": "validation:accuracy", "Regex": "acc=([0-9.]+)"}],
                                strategy="Bayesian", max_jobs=10, max_parallel_jobs=2, early_stopping_type="Auto")
    tuner.fit({"train": "train.csv"})
    tuner.best_training_job(); tuner.best_estimator().deploy(); tuner.analytics().dataframe()

The study lives in `<jobs root>/optuna.db` (SQLite) unless `storage` names a database URL
(`postgresql+psycopg2://...`), which lets tuners on several machines share it: each runs trials until
the study holds max_jobs of them, then waits for the others' trials to end. A running trial sends a
heartbeat every `heartbeat_interval` seconds; one silent for twice that (its tuner was killed, its
machine lost) is marked failed and run again, with the same hyperparameters, by a tuner still
running or the next one started (`max_retry_attempts` times at most). Calling fit again with the
same job_name resumes: finished trials are kept (its objective, direction and ranges cannot change).
Strategies map to Optuna samplers (Bayesian: TPE, Random, Grid, Hyperband: TPE + Hyperband pruning);
early stopping prunes a trial whose intermediate objective values fall below the median of earlier trials.
"""
import contextlib
import copy
import hashlib
import os
import secrets
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import ClassVar, Literal

from nlpforge.errors import ConfigError, TrainingJobError, TuningError
from nlpforge.sdk.estimator import Estimator
from nlpforge.sdk.jobs import check_name, describe_job, name_base
from nlpforge.sdk.runner import compile_metric_definitions
from nlpforge.settings import MAX_SEED, Settings, check_writable, file_lock, jobs_root, setting, sqlite_file
from nlpforge.tuning.parameters import ContinuousParameter, check_ranges, grid


DB_CONNECT_TIMEOUT = 10  # seconds; libpq and MySQL drivers otherwise wait on a silent server for minutes
UNCLAIMED_WAIT = 2.0  # seconds a running trial may stay unclaimed before it counts as a dead tuner's


def connect_timeout(url: str) -> dict:
    """SQLAlchemy engine arguments that bound the wait for a database server that does not answer."""
    if url.startswith(("postgresql", "mysql")):
        return {"connect_args": {"connect_timeout": DB_CONNECT_TIMEOUT}}
    return {}


@dataclass
class TuningArguments(Settings):
    """The tuner's arguments, with SageMaker's names, checked in one place."""

    argument_names: ClassVar[bool] = True
    objective_metric_name: str = setting("", "the metric to optimise")
    objective_type: Literal["Maximize", "Minimize"] = setting("Maximize", "whether higher or lower is better")
    strategy: Literal["Bayesian", "Random", "Grid", "Hyperband"] = setting("Bayesian", "how points are chosen")
    max_jobs: int | None = setting(None, "trials in all (default for Grid: the grid's size)", min=1)
    max_parallel_jobs: int = setting(1, "trials at once", min=1)
    early_stopping_type: Literal["Off", "Auto"] = setting("Off", "Auto prunes trials below the median")
    heartbeat_interval: int = setting(30, "seconds between a running trial's heartbeats; one silent for twice "
                                      "that is failed and retried", min=1)
    max_retry_attempts: int = setting(2, "times a trial whose tuner stopped is run again", min=0)
    random_seed: int | None = setting(None, "seed of the sampler, for trials that repeat", min=0, max=MAX_SEED)

    def check(self):
        if not self.objective_metric_name:
            raise ConfigError("objective_metric_name is required")


def optuna_module():
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    return optuna


@contextlib.contextmanager
def quiet_heartbeats(optuna):
    """Optuna's heartbeats are experimental and meant for optimize(); the tuner runs them with ask-and-tell."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        yield


class HyperparameterTuner:
    """Runs up to max_jobs training jobs of an estimator, choosing hyperparameters to optimise one metric."""

    def __init__(self, estimator, objective_metric_name: str, hyperparameter_ranges: dict,
                 metric_definitions: list[dict] | None = None, objective_type: str = "Maximize",
                 strategy: str = "Bayesian", max_jobs: int | None = None, max_parallel_jobs: int = 1,
                 early_stopping_type: str = "Off", base_tuning_job_name: str | None = None,
                 storage: str | None = None, random_seed: int | None = None, experiment_name: str | None = None,
                 heartbeat_interval: int = 30, max_retry_attempts: int = 2):
        if not isinstance(estimator, Estimator):
            raise TuningError(f"the tuner's estimator must be an nlpforge.sdk Estimator, such as "
                              f"Estimator(entry_point='train.py') or TextClassifier(), not {estimator!r}")
        self.ranges = check_ranges(hyperparameter_ranges)
        try:
            arguments = TuningArguments(objective_metric_name, objective_type, strategy, max_jobs, max_parallel_jobs,
                                        early_stopping_type, heartbeat_interval, max_retry_attempts, random_seed)
            compile_metric_definitions(metric_definitions)
        except ConfigError as error:
            raise TuningError(error.message) from None
        self.grid = grid(self.ranges) if strategy == "Grid" else None
        if max_jobs is None:
            if self.grid is None:
                raise TuningError(f"max_jobs is required with the {strategy} strategy")
            max_jobs = 1
            for values in self.grid.values():
                max_jobs *= len(values)
        known = {d["Name"] for d in (metric_definitions or []) + list(estimator.metric_definitions)}
        if objective_metric_name not in known:
            raise TuningError(f"objective metric '{objective_metric_name}' has no metric definition; add "
                              f"{{'Name': '{objective_metric_name}', 'Regex': ...}} to metric_definitions "
                              f"(known: {', '.join(sorted(known)) or 'none'})")
        self.estimator = estimator
        self.objective_metric_name, self.objective_type = objective_metric_name, objective_type
        self.metric_definitions = list(metric_definitions or [])
        self.strategy, self.max_jobs, self.max_parallel_jobs = strategy, max_jobs, max_parallel_jobs
        self.early_stopping_type = early_stopping_type
        self.base_tuning_job_name = base_tuning_job_name or estimator.default_job_base()
        self.root = jobs_root(estimator.jobs_root)
        if storage is not None and not isinstance(storage, str):
            raise TuningError(f"storage must be a database URL such as postgresql+psycopg2://user@host/db, not "
                              f"{storage!r}")
        self.storage = storage or f"sqlite:///{self.root / 'optuna.db'}"
        self.random_seed, self.experiment_name = arguments.random_seed, experiment_name
        self.heartbeat_interval, self.max_retry_attempts = heartbeat_interval, max_retry_attempts
        self.latest_tuning_job: str | None = None
        self.pruning_lock = threading.Lock()
        self.tuner_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._storage = None
        settings = getattr(estimator, "known_settings", None)  # a built-in estimator's engine settings
        unknown = sorted(n for n in self.ranges if settings is not None and n.replace("-", "_") not in settings)
        if unknown:
            raise TuningError(f"{type(estimator).__name__} has no hyperparameter {', '.join(unknown)}; see "
                              f"`nlpforge train {estimator.task} --help`")
        for name, parameter in self.ranges.items():  # each value a trial may take, checked now, not in a trial
            for value in parameter.checked_values():
                try:
                    estimator.check_hyperparameters({**estimator.hyperparameters(), name: value})
                except ConfigError as error:
                    hint = "; a ContinuousParameter draws values such as this, so use IntegerParameter for an " \
                        "integer setting" if isinstance(parameter, ContinuousParameter) and \
                        value not in (parameter.min_value, parameter.max_value) else ""
                    raise TuningError(f"hyperparameter range '{name}': {error.message}{hint}") from None

    # -- the study -------------------------------------------------------------------------------
    def sampler(self, optuna):
        if self.strategy == "Grid":
            return optuna.samplers.GridSampler(self.grid, seed=self.random_seed)
        if self.strategy == "Random":
            return optuna.samplers.RandomSampler(seed=self.random_seed)
        return optuna.samplers.TPESampler(seed=self.random_seed, n_startup_trials=min(10, max(2, self.max_jobs // 3)))

    def pruner(self, optuna):
        if self.strategy == "Hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1)
        if self.early_stopping_type == "Auto":
            return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1)
        return optuna.pruners.NopPruner()

    def storage_backend(self, optuna):
        """Optuna's RDBStorage on the URL, with heartbeats; made once per tuner."""
        if self._storage is None:
            from sqlalchemy import exc

            check_writable(self.root, "jobs_root", folder=True)
            self.root.mkdir(parents=True, exist_ok=True)
            for attempt in range(4):
                try:
                    with quiet_heartbeats(optuna):
                        self._storage = optuna.storages.RDBStorage(
                            self.storage, heartbeat_interval=self.heartbeat_interval,
                            grace_period=2 * self.heartbeat_interval,
                            heartbeat_stale_trial_callback=self.retry_trial,
                            engine_kwargs=connect_timeout(self.storage))
                    break
                except (exc.IntegrityError, exc.ProgrammingError):  # tuners creating a new database's tables
                    if attempt == 3:
                        raise
                    time.sleep(0.5 + secrets.randbelow(1000) / 1000)
                except (exc.OperationalError, exc.ArgumentError, exc.NoSuchModuleError) as error:
                    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0][:300]
                    check = "that the file can be opened" if self.storage.startswith("sqlite") else \
                        "that its database server runs"
                    raise TuningError(f"cannot open the tuning storage {self.storage}: {reason}; "
                                      f"check the URL and {check}") from None
                except ImportError as error:  # the URL's driver is not installed (postgresql:// means psycopg 3)
                    raise TuningError(f"cannot open the tuning storage {self.storage}: its database driver is not "
                                      f"installed ({error}); name one that is, e.g. postgresql+psycopg2://") from None
                except RuntimeError as error:  # optuna: the database holds tables it cannot use (another app's)
                    raise TuningError(f"cannot use the tuning storage {self.storage}: "
                                      f"{str(error).splitlines()[0][:300]}; give Optuna a database of its own") \
                        from None
        return self._storage

    def study(self, name: str):
        optuna = optuna_module()
        return optuna.create_study(study_name=name, storage=self.storage_backend(optuna), load_if_exists=True,
                                   direction="maximize" if self.objective_type == "Maximize" else "minimize",
                                   sampler=self.sampler(optuna), pruner=self.pruner(optuna))

    def trial_estimator(self, hyperparameters: dict, tuning_job_name: str):
        estimator = copy.copy(self.estimator)
        estimator._hyperparameters = {**self.estimator.hyperparameters(), **hyperparameters}
        names = {d["Name"] for d in self.metric_definitions}
        estimator.metric_definitions = self.metric_definitions + [d for d in self.estimator.metric_definitions
                                                                  if d["Name"] not in names]
        estimator.latest_training_job = None
        estimator.tuning_job_name = tuning_job_name
        return estimator

    def objective(self, tuning_job_name: str, inputs, optuna):
        def run_trial(trial):
            hyperparameters = {name: r.suggest(trial, name) for name, r in self.ranges.items()}
            job_name = f"{tuning_job_name[:45]}-{trial.number:03d}-{secrets.token_hex(4)}"
            trial.set_user_attr("job_name", job_name)
            estimator = self.trial_estimator(hyperparameters, tuning_job_name)

            def on_metric(name, value, step):
                if name != self.objective_metric_name:
                    return
                # Optuna's pruners are not thread-safe (HyperbandPruner sets its brackets up lazily).
                with self.pruning_lock:
                    trial.report(value, step)
                    prune = trial.should_prune()
                if prune:
                    from nlpforge.sdk.runner import StopJob

                    raise StopJob(f"{name}={value:.4g} at step {step} is below the median of earlier trials")

            estimator.fit(inputs, logs=False, job_name=job_name, on_metric=on_metric,
                          experiment_config={"ExperimentName": self.experiment_name or tuning_job_name,
                                             "TrialName": tuning_job_name, "TrialComponentDisplayName": job_name})
            job = describe_job(job_name, self.root)
            if job["TrainingJobStatus"] == "Stopped" and "early stopping" in (job["FailureReason"] or ""):
                raise optuna.TrialPruned(job["FailureReason"])
            if job["TrainingJobStatus"] != "Completed":
                raise TrainingJobError(f"{job_name} ended {job['TrainingJobStatus']}: {job['FailureReason']}")
            values = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
            if self.objective_metric_name not in values:
                raise TuningError(f"{job_name} never logged '{self.objective_metric_name}'; check that its regex "
                                  "matches a line the script prints")
            return values[self.objective_metric_name]

        return run_trial

    def fit(self, inputs=None, job_name: str | None = None, wait: bool = True) -> None:
        """Run, resume or join the tuning job until its study holds max_jobs finished trials (in the foreground);
        a TuningError when none of them completed."""
        if not wait:
            raise TuningError("tuning runs in the foreground; call fit() with wait=True (the default), and run "
                              "several tuners on one storage URL to spread trials over machines")
        optuna = optuna_module()
        base = name_base(self.base_tuning_job_name[:20])  # a script's name (train_bert.py) may hold '_'
        name = check_name(job_name or f"{base or 'tuning'}-" + datetime.now(timezone.utc).strftime("%y%m%d-%H%M%S"),
                          "tuning job name", TuningError)
        study = self.study(name)
        self.check_same_job(study, name)
        self.latest_tuning_job = name
        study.set_user_attr("strategy", self.strategy)
        study.set_user_attr("max_jobs", self.max_jobs)
        running = optuna.trial.TrialState.RUNNING
        with self.asking(name) as serialised:
            for trial_id in self.untagged_trials(study, optuna, wait=not serialised):
                self.fail_and_retry(study, trial_id, optuna)
        try:
            self.run_trials(study, self.objective(name, inputs, optuna), optuna)
        except KeyboardInterrupt:  # our trials are retried by the next fit, without waiting for them to go stale
            for trial in study.get_trials(deepcopy=False, states=(running,)):
                if trial.user_attrs.get("tuner") == self.tuner_id:
                    self.fail_and_retry(study, trial._trial_id, optuna)
            raise
        trials = counted_trials(study.get_trials(deepcopy=False))
        state = optuna.trial.TrialState
        if trials and not any(t.state == state.COMPLETE for t in trials):
            failed = [t for t in trials if t.state == state.FAIL]
            first = next((f", the first because {t.user_attrs['error']}" for t in failed if "error" in t.user_attrs),
                         "")
            raise TuningError(f"tuning job {name} has no completed trial: {len(failed)} of {len(trials)} failed"
                              f"{first}; its study and jobs are kept (`nlpforge jobs list`): fix the cause, then fit "
                              "with a new job_name")

    @staticmethod
    def untagged_trials(study, optuna, wait: bool = True) -> list[int]:
        """Running trials that no tuner has claimed: their tuner died between asking and claiming them, so
        they send no heartbeats and never go stale. Seen while holding `asking`, every one is such a trial;
        otherwise a live tuner may be between the two, so only trials still unclaimed a moment later count
        (the moment is a database round trip)."""
        def unclaimed():
            return {trial._trial_id for trial in study.get_trials(deepcopy=False,
                                                                  states=(optuna.trial.TrialState.RUNNING,))
                    if "tuner" not in trial.user_attrs}

        first = unclaimed()
        if not first or not wait:
            return sorted(first)
        time.sleep(UNCLAIMED_WAIT)
        return sorted(first & unclaimed())

    @contextlib.contextmanager
    def asking(self, study_name: str):
        """Hold the study's lock, shared by every tuner of the storage, while counting, asking for and
        claiming a trial, so two tuners never ask for the last trial of the budget at once; yields whether
        the storage has such a lock (SQLite: a file lock beside the database, PostgreSQL: an advisory lock;
        the tuner copes without one on other databases, see next_trial)."""
        path = sqlite_file(self.storage)
        if path is not None:
            with contextlib.ExitStack() as stack:
                try:
                    held = stack.enter_context(file_lock(path.with_name(path.name + ".lock")))
                except OSError:  # a folder it cannot write: no lock, as on other databases
                    held = False
                yield held
        elif self.storage.startswith("postgresql"):
            from sqlalchemy import text

            key = int.from_bytes(hashlib.sha256(f"nlpforge-tuning:{study_name}".encode()).digest()[:8], "big",
                                 signed=True)
            # A transaction's lock: its end (commit, rollback, or the tuner's death) frees it, whatever happened.
            with self._storage.engine.begin() as connection:
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
                yield True
        else:
            yield False

    def check_same_job(self, study, name: str) -> None:
        """A tuning job resumed under its name keeps its objective, direction and ranges, which its trials were
        scored and sampled with; those of a new tuning job are recorded in its study."""
        optuna = optuna_module()
        asked = {"objective_metric_name": self.objective_metric_name, "objective_type": self.objective_type,
                 "ranges": {n: repr(r) for n, r in sorted(self.ranges.items())}}
        held = {**study.user_attrs, "objective_type": "Maximize" if study.direction ==
                optuna.study.StudyDirection.MAXIMIZE else "Minimize"}
        changed = [key for key in asked if held.get(key) is not None and held[key] != asked[key]]
        if changed:
            raise TuningError(f"tuning job {name} already ran with " +
                              ", ".join(f"{key} {held[key]!r} (now {asked[key]!r})" for key in changed) +
                              "; its trials cannot be compared with this tuner's: use a new job name")
        for key, value in asked.items():
            study.set_user_attr(key, value)

    def run_trials(self, study, objective, optuna) -> None:
        """Run trials, max_parallel_jobs at a time (Optuna's ask-and-tell), until the study holds max_jobs.

        Asking under a lock lets each new trial see the grid points its running neighbours took,
        so parallel Grid trials never repeat one.
        """
        lock, errors = threading.Lock(), []
        state = optuna.trial.TrialState

        def worker():
            while True:
                with lock:
                    trial = None if errors else self.next_trial(study, optuna)
                if trial is None:
                    return
                try:
                    with self.heartbeat(study, trial):
                        value = objective(trial)
                except optuna.TrialPruned:
                    tell(study, trial, state=state.PRUNED)
                except (TrainingJobError, TuningError) as error:
                    study._storage.set_trial_user_attr(trial._trial_id, "error", error.message[:2000])
                    tell(study, trial, state=state.FAIL)
                except BaseException as error:  # a bug: fail the trial, stop the others, raise in fit
                    tell(study, trial, state=state.FAIL)
                    errors.append(error)
                    return
                else:
                    tell(study, trial, value)

        workers = [threading.Thread(target=worker, daemon=True) for _ in range(self.max_parallel_jobs)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        if errors:
            raise errors[0]

    def next_trial(self, study, optuna):
        """The next trial to run; None once every trial of the budget has started and no other tuner's
        trial is still running (it may stop, leaving its trial to retry).

        Tuners count, ask and claim under the study's lock (`asking`). Where the storage has none,
        several tuners may ask for the last trial at once: the study numbers trials in order, so the
        ones numbered past the budget are dropped (marked `surplus`, failed before running).
        """
        state = optuna.trial.TrialState
        while True:
            with quiet_heartbeats(optuna):
                optuna.storages.fail_stale_trials(study)
            with self.asking(study.study_name):
                trials = counted_trials(study.get_trials(deepcopy=False))
                trial = None
                if len(trials) < self.max_jobs or any(t.state == state.WAITING for t in trials):
                    with quiet_heartbeats(optuna):
                        trial = study.ask()
                    try:
                        study._storage.set_trial_user_attr(trial._trial_id, "tuner", self.tuner_id)
                    except optuna.exceptions.UpdateFinishedTrialError:  # another tuner took it for a dead one's
                        continue
                    study._storage.record_heartbeat(trial._trial_id)
            if trial is not None:
                earlier = [t for t in counted_trials(study.get_trials(deepcopy=False)) if t.number < trial.number]
                if len(earlier) < self.max_jobs:
                    return trial
                study._storage.set_trial_user_attr(trial._trial_id, "surplus", True)
                tell(study, trial, state=state.FAIL)
                continue
            if not any(t.state == state.RUNNING and t.user_attrs.get("tuner") not in (None, self.tuner_id)
                       for t in trials):
                return None
            time.sleep(self.heartbeat_interval)

    @contextlib.contextmanager
    def heartbeat(self, study, trial):
        """Record the trial's heartbeat every heartbeat_interval seconds while it runs."""
        stop = threading.Event()

        def beat():
            while not stop.wait(self.heartbeat_interval):
                try:
                    study._storage.record_heartbeat(trial._trial_id)
                except Exception:  # a dropped database connection: the next beat tries again
                    pass

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def fail_and_retry(self, study, trial_id: int, optuna) -> None:
        """Mark a running trial failed and queue it again, unless another tuner already did."""
        try:
            study._storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return
        self.retry_trial(study, study._storage.get_trial(trial_id))

    def retry_trial(self, study, trial) -> None:
        """Queue a failed trial whose tuner stopped to run again with its hyperparameters, at most
        max_retry_attempts times (Optuna's heartbeat calls this for a stale trial). The new trial's
        retry_history names the trials it replaces; past the limit, the trial stays a failure."""
        optuna = optuna_module()
        if len(trial.system_attrs.get("retry_history", [])) >= self.max_retry_attempts:
            return
        queued = copy.deepcopy(trial)
        for name in ("job_name", "tuner"):
            queued.user_attrs.pop(name, None)
        with quiet_heartbeats(optuna):
            optuna.storages.RetryHeartbeatStaleTrialCallback()(study, queued)

    # -- results ---------------------------------------------------------------------------------
    def _study(self):
        if self.latest_tuning_job is None:
            raise TuningError("this tuner has not run; call fit() first")
        return self.study(self.latest_tuning_job)

    def best_training_job(self) -> str:
        study = self._study()
        try:
            best = study.best_trial
        except ValueError:
            raise TuningError(f"tuning job {self.latest_tuning_job} has no completed trial; see "
                              "`nlpforge jobs list` for the failure reasons") from None
        return best.user_attrs["job_name"]

    def best_estimator(self):
        """The best trial's job, attached as the estimator class that ran it (TextClassifier, Estimator, ...)."""
        return Estimator.attach(self.best_training_job(), jobs_root=str(self.root))

    def analytics(self) -> "TuningJobAnalytics":
        return TuningJobAnalytics(self._study(), self.root)

    def describe(self) -> dict:
        study = self._study()
        counts, trials = {}, study.get_trials(deepcopy=False)
        retried = retried_numbers(trials)
        for trial in trials:
            if not trial.user_attrs.get("surplus"):
                state = trial_state(trial, retried)
                counts[state] = counts.get(state, 0) + 1
        best = None
        try:
            best = {"TrainingJobName": study.best_trial.user_attrs["job_name"],
                    "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": self.objective_metric_name,
                                                                    "Value": study.best_value}}
        except ValueError:
            pass
        return {"HyperParameterTuningJobName": self.latest_tuning_job, "Strategy": self.strategy,
                "MaxNumberOfTrainingJobs": self.max_jobs, "MaxParallelTrainingJobs": self.max_parallel_jobs,
                "TrainingJobStatusCounters": counts, "BestTrainingJob": best, "Storage": self.storage}


def retried_numbers(trials) -> set[int]:
    """The numbers of the trials that were interrupted and queued again: those in a retry's
    retry_history, and those marked `interrupted` by tuners that sent no heartbeats."""
    return {number for t in trials for number in t.system_attrs.get("retry_history", [])} | \
        {t.number for t in trials if t.user_attrs.get("interrupted")}


def counted_trials(trials) -> list:
    """The trials that take one of max_jobs: not those queued again, nor surplus ones."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.number not in retried and not t.user_attrs.get("surplus")]


def tell(study, trial, value=None, state=None) -> None:
    """study.tell, outside Optuna's optimize loop.

    GridSampler calls study.stop() once the grid is used up, which raises outside optimize(); the
    trial's result is stored before that (Optuna stores it in a `finally`), so the error is dropped.
    A trial another tuner took for stale (and queued again) is finished already: its result is dropped.
    """
    try:
        study.tell(trial, value, state=state, skip_if_finished=True)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise


def trial_state(trial, retried: set[int]) -> str:
    """Optuna's state of the trial, INTERRUPTED for a failed one that was queued again."""
    return "INTERRUPTED" if trial.number in retried else trial.state.name


class TuningJobAnalytics:
    """SageMaker's HyperparameterTuningJobAnalytics: one row per training job of the tuning job.

    A job whose tuner stopped while it ran has TrialState INTERRUPTED; the trial that ran its
    hyperparameters again names its TrialNumber in RetryOf.
    """

    def __init__(self, study, root):
        self.study, self.root = study, root

    def dataframe(self):
        import pandas as pd

        rows, trials = [], self.study.get_trials(deepcopy=False)
        retried = retried_numbers(trials)
        for trial in trials:
            if "job_name" not in trial.user_attrs or trial.state.name == "WAITING":
                continue
            job_name = trial.user_attrs["job_name"]
            try:
                job = describe_job(job_name, self.root)
            except TrainingJobError:
                job = {"TrainingJobStatus": "NotStarted"}
            rows.append({**trial.params, "TrainingJobName": job_name,
                         "TrainingJobStatus": job.get("TrainingJobStatus"), "TrialState": trial_state(trial, retried),
                         "TrialNumber": trial.number,
                         "RetryOf": (trial.system_attrs.get("retry_history") or [None])[-1],
                         "FinalObjectiveValue": trial.value,
                         "TrainingStartTime": job.get("TrainingStartTime"),
                         "TrainingEndTime": job.get("TrainingEndTime"),
                         "TrainingElapsedTimeSeconds": job.get("TrainingTimeInSeconds")})
        return pd.DataFrame(rows)
