"""DefaultModelMonitor: SageMaker's Model Monitor API over nlpforge's text monitor, on this machine.

    from nlpforge.sdk import CronExpressionGenerator, DatasetFormat, DefaultModelMonitor
    monitor = DefaultModelMonitor(role=role, instance_count=1, instance_type="ml.m5.xlarge",
                                  volume_size_in_gb=20, max_runtime_in_seconds=3600)
    monitor.suggest_baseline(baseline_dataset="train.csv", dataset_format=DatasetFormat.csv(header=True),
                             output_s3_uri="baseline", wait=True, text_column="review_body")
    monitor.baseline_statistics().body_dict["dataset"]["item_count"]
    monitor.create_monitoring_schedule(monitor_schedule_name="stars-monitor", endpoint_input=predictor,
                                       output_s3_uri="reports", statistics=monitor.baseline_statistics(),
                                       constraints=monitor.suggested_constraints(),
                                       schedule_cron_expression=CronExpressionGenerator.hourly())
    for execution in monitor.list_executions():
        execution.describe()["ExitMessage"], execution.constraint_violations().body_dict
    monitor.stop_monitoring_schedule(); monitor.delete_monitoring_schedule()

role, instance_count, instance_type (local or ml.*), volume_size_in_gb, max_runtime_in_seconds,
sagemaker_session, env, tags, ... are accepted and ignored: the jobs run here. Output "URIs" are local folders
(or file://); s3:// is refused. nlpforge's additions, as keywords: `text_column` (the baseline file's text
column, default "text") and `model` (the model whose tokenizer gives the WordPiece descriptors) on
suggest_baseline; `interval_seconds` (any interval instead of the cron expression's) on
create_monitoring_schedule; `jobs_root` on the constructor, whose endpoints are monitored and under which
outputs go by default (`<jobs root>/_monitoring/<name>`).

The schedule runs in a background thread of this process (`nlpforge.monitoring.schedule`): each run checks
the endpoint's data capture written since the previous one (`<jobs root>/_model_store/capture/<endpoint>`,
where the server that deploy() starts writes it) and publishes the drift status in the server's metrics. For
a schedule that outlives this process, run `nlpforge monitor schedule`.
"""
import json
import re
import threading
from pathlib import Path

from nlpforge.errors import ConfigError
from nlpforge.sdk.jobs import check_name
from nlpforge.sdk.processing import check_instances
from nlpforge.settings import check_output_folder
from nlpforge.settings import jobs_root as resolve_jobs_root


class DataCaptureConfig:
    """SageMaker's data capture settings for deploy(data_capture_config=...): `sampling_percentage` of the
    requests (SageMaker's default 20) go to the server's capture folder, `<jobs root>/_model_store/capture/
    <endpoint>`, where the monitor reads them. destination_s3_uri, kms_key_id and the content types are accepted
    and ignored: the folder is the server's."""

    def __init__(self, enable_capture=True, sampling_percentage=20, destination_s3_uri=None, kms_key_id=None,
                 capture_options=None, csv_content_types=None, json_content_types=None, sagemaker_session=None):
        if not isinstance(enable_capture, bool):
            raise ConfigError(f"enable_capture must be True or False, not {enable_capture!r}")
        if isinstance(sampling_percentage, bool) or not isinstance(sampling_percentage, (int, float)) or \
                not 0 <= sampling_percentage <= 100:
            raise ConfigError(f"sampling_percentage {sampling_percentage!r}: give a percentage from 0 to 100")
        self.enable_capture = enable_capture
        self.sampling_percentage = sampling_percentage
        self.destination_s3_uri = destination_s3_uri
        self.capture_options = capture_options or ["REQUEST", "RESPONSE"]

    @property
    def capture_percent(self) -> float:
        return float(self.sampling_percentage) if self.enable_capture else 0.0


class DatasetFormat:
    """SageMaker's dataset formats; the file's own extension (.csv, .jsonl, ...) decides how it is read."""

    @staticmethod
    def csv(header=True, output_columns_position="START"):
        return {"csv": {"header": header, "output_columns_position": output_columns_position}}

    @staticmethod
    def json(lines=True):
        return {"json": {"lines": lines}}

    @staticmethod
    def sagemaker_capture_json():
        return {"sagemakerCaptureJson": {}}


class CronExpressionGenerator:
    """SageMaker's schedule expressions; locally they set the interval between runs."""

    @staticmethod
    def hourly():
        return "cron(0 * ? * * *)"

    @staticmethod
    def daily(hour=0):
        return f"cron(0 {hour} ? * * *)"

    @staticmethod
    def daily_every_x_hours(hour_interval, starting_hour=0):
        return f"cron(0 {starting_hour}/{hour_interval} ? * * *)"

    @staticmethod
    def now():
        return "NOW"


def interval_of(expression: str) -> tuple[float, int | None]:
    """(seconds between runs, runs or None for no limit) of a CronExpressionGenerator expression."""
    if expression == "NOW":
        return 0.01, 1
    match = re.fullmatch(r"cron\(0 (\*|\d{1,2})(?:/(\d{1,2}))? \? \* \* \*\)", str(expression).strip())
    if not match or match.group(1) != "*" and int(match.group(1)) > 23 or match.group(2) and \
            not 1 <= int(match.group(2)) <= 23:
        raise ConfigError(f"schedule_cron_expression {expression!r}: use CronExpressionGenerator.hourly(), "
                          "daily(hour) with an hour from 0 to 23, daily_every_x_hours(x) with x from 1 to 23 or now(), "
                          "or give interval_seconds")
    # `*` alone is every hour, `*/x` or `h/x` every x hours, `h` once a day
    hours = int(match.group(2)) if match.group(2) else 1 if match.group(1) == "*" else 24
    return hours * 3600.0, None


def local_folder(uri, argument: str) -> Path:
    """A local folder for an output or input 'URI'; s3:// is refused with the fix."""
    text = str(uri)
    if text.startswith("s3://"):
        raise ConfigError(f"{argument} {text} is an S3 URI; nlpforge runs locally: give a local folder or file")
    return Path(text.removeprefix("file://")).expanduser()


class MonitoringFile:
    """A statistics, constraints or constraint-violations file, as SageMaker's (`body_dict`, `file_s3_uri`)."""

    def __init__(self, path):
        self.file_s3_uri = str(path)
        try:
            self.body_dict = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"{path}: cannot read it ({error.strerror or error}); give the path of a "
                              f"{type(self).__name__} file that suggest_baseline or a monitoring run wrote") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: not valid JSON ({error}); give a {type(self).__name__} file that "
                              "suggest_baseline or a monitoring run wrote") from None

    @classmethod
    def from_s3_uri(cls, statistics_file_s3_uri, **_ignored):
        return cls(local_folder(statistics_file_s3_uri, "file uri"))


class Statistics(MonitoringFile):
    """statistics.json."""


class Constraints(MonitoringFile):
    """constraints.json."""


class ConstraintViolations(MonitoringFile):
    """constraint_violations.json."""


class BaseliningJob:
    """A finished baseline: its folder of statistics.json and constraints.json."""

    def __init__(self, job_name: str, output: Path):
        self.job_name, self.output = job_name, output

    def describe(self) -> dict:
        return {"ProcessingJobName": self.job_name, "ProcessingJobStatus": "Completed",
                "ProcessingOutputConfig": {"Outputs": [{"S3Output": {"S3Uri": str(self.output)}}]}}

    def baseline_statistics(self, file_name="statistics.json", **_ignored) -> Statistics:
        return Statistics(self.output / file_name)

    def suggested_constraints(self, file_name="constraints.json", **_ignored) -> Constraints:
        return Constraints(self.output / file_name)


class MonitoringExecution:
    """One run of a schedule: its run.json and report folder."""

    EXIT_MESSAGES = {"violations": "CompletedWithViolations", "no violations": "Completed",
                     "no data": "CompletedWithNoData", "failed": "Failed"}

    def __init__(self, run: dict, folder: Path):
        self.run, self.output = run, folder
        self.status = run["status"]  # nlpforge's: no data, no violations, violations or failed

    def describe(self) -> dict:
        message = self.EXIT_MESSAGES[self.status]
        detail = self.run.get("error") or f"{self.run['item_count']} texts, {self.run['violations']} violations"
        return {"ProcessingJobName": self.run["run"],
                "ProcessingJobStatus": "Failed" if self.status == "failed" else "Completed",
                "ExitMessage": f"{message}: {detail}", "ProcessingStartTime": self.run["until"],
                "ProcessingEndTime": self.run["ended"],
                "ProcessingOutputConfig": {"Outputs": [{"S3Output": {"S3Uri": str(self.output)}}]},
                "Environment": {"start_time": self.run["since"], "end_time": self.run["until"]}}

    def statistics(self, file_name="statistics.json", **_ignored) -> Statistics:
        return Statistics(self.output / file_name)

    def constraint_violations(self, file_name="constraint_violations.json", **_ignored) -> ConstraintViolations:
        return ConstraintViolations(self.output / file_name)


def refuse_unsupported(arguments: dict, fix: str) -> None:
    """One line for the first SageMaker argument given that the text monitor does not support."""
    given = next((name for name, value in arguments.items() if value is not None), None)
    if given is not None:
        raise ConfigError(f"{given} is not supported by nlpforge's text monitor; {fix}")


class DefaultModelMonitor:
    """SageMaker's `sagemaker.model_monitor.DefaultModelMonitor`, for text, on this machine."""

    def __init__(self, role=None, instance_count=1, instance_type="ml.m5.xlarge", volume_size_in_gb=30,
                 volume_kms_key=None, output_kms_key=None, max_runtime_in_seconds=None, base_job_name=None,
                 sagemaker_session=None, env=None, tags=None, network_config=None, jobs_root=None):
        check_instances(instance_count, instance_type)
        if base_job_name is not None and not isinstance(base_job_name, str):
            raise ConfigError(f"base_job_name must be a string such as 'stars-monitor', not {base_job_name!r}")
        self.base_job_name = base_job_name
        self.jobs_root = resolve_jobs_root(jobs_root)
        self.baselining_jobs: list[BaseliningJob] = []
        self.latest_baselining_job: BaseliningJob | None = None
        self.monitoring_schedule_name: str | None = None
        self._schedule = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None
        self._cron = None
        self._endpoint = None

    def _name(self, base: str, given: str | None, argument: str) -> str:
        """The given name (it names a folder under the jobs root, so it follows the job-name rule) or a new one."""
        from nlpforge.sdk.estimator import timestamped_name

        return check_name(given, argument) if given is not None else timestamped_name(self.base_job_name or base)

    def suggest_baseline(self, baseline_dataset, dataset_format=None, record_preprocessor_script=None,
                         post_analytics_processor_script=None, output_s3_uri=None, wait=True, logs=True,
                         job_name=None, monitoring_config_override=None, *, text_column: str = "text",
                         model: str | None = None) -> BaseliningJob:
        """Baseline the text column of a data file (runs now, whatever `wait` says); returns the job."""
        from nlpforge.monitoring.run import BaselineSettings, suggest_baseline

        refuse_unsupported({"record_preprocessor_script": record_preprocessor_script,
                            "post_analytics_processor_script": post_analytics_processor_script,
                            "monitoring_config_override": monitoring_config_override},
                           "leave it out (the features are the text's own descriptors)")
        if isinstance(dataset_format, dict) and dataset_format.get("csv", {}).get("header") is False:
            raise ConfigError("dataset_format=DatasetFormat.csv(header=False): the baseline file needs a header row "
                              "that names its text column (text_column=...)")
        name = self._name("baseline-suggestion-job", job_name, "job_name")
        output = (local_folder(output_s3_uri, "output_s3_uri") if output_s3_uri is not None
                  else self.jobs_root / "_monitoring" / name)
        suggest_baseline(BaselineSettings.of(data=str(local_folder(baseline_dataset, "baseline_dataset")),
                                             text_column=text_column, model=model, output=str(output)))
        self.latest_baselining_job = BaseliningJob(name, output)
        self.baselining_jobs.append(self.latest_baselining_job)
        return self.latest_baselining_job

    def baseline_statistics(self, file_name="statistics.json") -> Statistics:
        return self._baseline().baseline_statistics(file_name)

    def suggested_constraints(self, file_name="constraints.json") -> Constraints:
        return self._baseline().suggested_constraints(file_name)

    def describe_latest_baselining_job(self) -> dict:
        return self._baseline().describe()

    def _baseline(self) -> BaseliningJob:
        if self.latest_baselining_job is None:
            raise ConfigError("no baseline yet; call suggest_baseline(...) first")
        return self.latest_baselining_job

    def create_monitoring_schedule(self, endpoint_input=None, record_preprocessor_script=None,
                                   post_analytics_processor_script=None, output_s3_uri=None, constraints=None,
                                   statistics=None, monitor_schedule_name=None, schedule_cron_expression=None,
                                   enable_cloudwatch_metrics=True, batch_transform_input=None,
                                   data_analysis_start_time=None, data_analysis_end_time=None, *,
                                   interval_seconds: float | None = None) -> None:
        """Start checking the endpoint's data capture at an interval (default: hourly) in a background thread."""
        from nlpforge.monitoring.run import read_baseline
        from nlpforge.monitoring.schedule import MAX_INTERVAL, MIN_INTERVAL, ScheduleSettings

        if self.monitoring_schedule_name is not None:
            raise ConfigError(f"this monitor already has the schedule {self.monitoring_schedule_name!r}; delete it "
                              "with delete_monitoring_schedule() or create another DefaultModelMonitor")
        refuse_unsupported({"record_preprocessor_script": record_preprocessor_script,
                            "post_analytics_processor_script": post_analytics_processor_script,
                            "batch_transform_input": batch_transform_input},
                           "monitor an endpoint's data capture (endpoint_input=predictor)")
        endpoint = getattr(endpoint_input, "endpoint_name", endpoint_input)
        if not isinstance(endpoint, str) or not endpoint:
            raise ConfigError("endpoint_input: give the endpoint's Predictor or its name")
        from nlpforge.serving.registry import valid_name

        if not valid_name(endpoint):  # the schedule's own check would name the CLI's --model-name
            raise ConfigError(f"endpoint_input {endpoint!r} is no endpoint name (letters, digits, '-', '_' or '.', "
                              "starting with a letter or digit); give the endpoint's Predictor or its name")
        if interval_seconds is not None and (isinstance(interval_seconds, bool) or not isinstance(
                interval_seconds, (int, float)) or not MIN_INTERVAL <= interval_seconds <= MAX_INTERVAL):
            # 0 would otherwise fall back to the cron expression's interval unnoticed; the schedule's own check
            # would name the CLI's --interval
            raise ConfigError(f"interval_seconds must be a number of seconds between runs from {MIN_INTERVAL} to "
                              f"{MAX_INTERVAL:.0f} (a year), such as 3600, not {interval_seconds!r}; leave it out to "
                              "use schedule_cron_expression")
        baseline = self._baseline_folder(statistics, constraints)
        self._cron = schedule_cron_expression or CronExpressionGenerator.daily()  # SageMaker's default: daily
        # interval_seconds wins over the expression, which is then only read for now()'s single run
        interval, runs = (interval_seconds, 1 if self._cron == "NOW" else None) if interval_seconds is not None \
            else interval_of(self._cron)
        name = self._name("monitoring-schedule", monitor_schedule_name, "monitor_schedule_name")
        output = (local_folder(output_s3_uri, "output_s3_uri") if output_s3_uri is not None
                  else self.jobs_root / "_monitoring" / name)
        # Found here, not later in describe_schedule()'s FailureReason: a baseline that cannot be read, an
        # output that cannot be written or that holds other files.
        check_output_folder(output, "output_s3_uri", "schedule", "schedule.json", own=("runs",))
        read_baseline(baseline)
        jobs_root = getattr(endpoint_input, "jobs_root", None) or self.jobs_root
        self._schedule = ScheduleSettings.of(
            baseline=str(baseline), capture=str(Path(jobs_root) / "_model_store" / "capture"), output=str(output),
            interval=interval, runs=runs, model_name=endpoint)
        Path(self._schedule.capture).mkdir(parents=True, exist_ok=True)  # an endpoint that captured nothing yet
        self.monitoring_schedule_name, self._endpoint = name, endpoint
        self.start_monitoring_schedule()

    def _baseline_folder(self, statistics, constraints) -> Path:
        """The baseline folder that statistics and constraints (objects or paths) come from."""
        folders = set()
        for value, argument in ((statistics, "statistics"), (constraints, "constraints")):
            if value is not None:
                path = local_folder(getattr(value, "file_s3_uri", value), argument)
                folders.add((path if path.is_dir() else path.parent).resolve())
        if not folders:
            return self._baseline().output
        if len(folders) > 1:
            raise ConfigError("statistics and constraints come from different folders; give both from one "
                              "suggest_baseline output (they are checked together with its text sample)")
        return folders.pop()

    def start_monitoring_schedule(self) -> None:
        """Start (or restart after stop_monitoring_schedule) the background runs."""
        from nlpforge.monitoring.schedule import run_schedule

        if self._schedule is None:
            raise ConfigError("no monitoring schedule; call create_monitoring_schedule(...) first")
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop, self._error = threading.Event(), None

        def run():
            try:
                run_schedule(self._schedule, self._stop)
            except Exception as error:  # noqa: BLE001 - shown by describe_schedule as FailureReason
                self._error = error

        self._thread = threading.Thread(target=run, daemon=True, name=f"monitor-{self.monitoring_schedule_name}")
        self._thread.start()

    def stop_monitoring_schedule(self, timeout: float | None = None) -> None:
        """Stop after the run in progress, if any (its report is kept)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def delete_monitoring_schedule(self) -> None:
        """Stop the schedule and drop its drift status from the server's metrics; the reports stay."""
        from nlpforge.serving.metrics import drift_status_path

        if self._schedule is None:
            return
        self.stop_monitoring_schedule()
        drift_status_path(self._schedule.capture, self._schedule.model_name, None).unlink(missing_ok=True)
        self.monitoring_schedule_name, self._schedule, self._thread = None, None, None

    def list_executions(self) -> list[MonitoringExecution]:
        """The schedule's runs, oldest first."""
        from nlpforge.monitoring.schedule import list_runs

        if self._schedule is None:
            return []
        output = Path(self._schedule.output)
        if not (output / "schedule.json").is_file():
            return []
        return [MonitoringExecution(run, output / "runs" / run["run"]) for run in list_runs(output)]

    def describe_schedule(self) -> dict:
        """SageMaker's DescribeMonitoringSchedule answer, with the latest run's summary."""
        if self._schedule is None:
            raise ConfigError("no monitoring schedule; call create_monitoring_schedule(...) first")
        running = self._thread is not None and self._thread.is_alive()
        status = "Failed" if self._error else "Scheduled" if running else "Stopped"
        described = {"MonitoringScheduleName": self.monitoring_schedule_name, "MonitoringScheduleStatus": status,
                     "MonitoringType": "DataQuality", "EndpointName": self._endpoint,
                     "MonitoringScheduleConfig": {"ScheduleConfig": {"ScheduleExpression": self._cron},
                                                  "IntervalSeconds": self._schedule.interval,
                                                  "BaselineConfig": {"Folder": self._schedule.baseline},
                                                  "Output": self._schedule.output}}
        if self._error:
            described["FailureReason"] = str(self._error)
        executions = self.list_executions()
        if executions:
            latest = executions[-1]
            described["LastMonitoringExecutionSummary"] = {
                "MonitoringScheduleName": self.monitoring_schedule_name, "EndpointName": self._endpoint,
                "ScheduledTime": latest.run["until"],
                "MonitoringExecutionStatus": MonitoringExecution.EXIT_MESSAGES[latest.status],
                "ProcessingJobName": latest.run["run"]}
        return described

    def latest_monitoring_statistics(self) -> Statistics | None:
        executions = self.list_executions()
        return executions[-1].statistics() if executions and executions[-1].status != "failed" else None

    def latest_monitoring_constraint_violations(self) -> ConstraintViolations | None:
        executions = self.list_executions()
        return executions[-1].constraint_violations() if executions and executions[-1].status != "failed" else None
