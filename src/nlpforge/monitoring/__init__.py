"""Model Monitor: baseline a text data set, then check windows of captured traffic against it.

    from nlpforge.monitoring import BaselineSettings, MonitorRunSettings, suggest_baseline, monitor_run

    suggest_baseline(BaselineSettings(data="train.csv", text_column="review_body", output="baseline"))
    summary = monitor_run(MonitorRunSettings(baseline="baseline", capture="capture", output="report"))
    run_schedule(ScheduleSettings(baseline="baseline", capture="capture", output="schedule", interval=3600))

The files are SageMaker Model Monitor's (statistics.json, constraints.json, constraint_violations.json),
so tools written for them keep working; the features are the text's own descriptors.
"""
from nlpforge.monitoring.run import BaselineSettings, MonitorRunSettings, monitor_run, suggest_baseline
from nlpforge.monitoring.schedule import ScheduleSettings, describe_schedule, list_runs, run_schedule

__all__ = ["BaselineSettings", "MonitorRunSettings", "ScheduleSettings", "describe_schedule", "list_runs",
           "monitor_run", "run_schedule", "suggest_baseline"]
