"""Model Monitor: baseline a text data set, then check windows of captured traffic against it.

    from nlpforge.monitoring import BaselineSettings, MonitorRunSettings, suggest_baseline, monitor_run

    suggest_baseline(BaselineSettings(data="train.csv", text_column="review_body", output="baseline"))
    summary = monitor_run(MonitorRunSettings(baseline="baseline", capture="capture", output="report"))

The files are SageMaker Model Monitor's (statistics.json, constraints.json, constraint_violations.json),
so tools written for them keep working; the features are the text's own descriptors.
"""
from nlpforge.monitoring.run import BaselineSettings, MonitorRunSettings, monitor_run, suggest_baseline

__all__ = ["BaselineSettings", "MonitorRunSettings", "monitor_run", "suggest_baseline"]
