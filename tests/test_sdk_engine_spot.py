"""The built-in TextClassifier estimator on the real training engine: a spot interruption
(SIGTERM) makes the engine checkpoint, and the restarted job resumes from that checkpoint."""
import json

import pytest

from conftest import toy_rows, write_csv


@pytest.mark.slow
def test_builtin_estimator_resumes_through_the_engine_after_a_spot_interruption(tmp_path):
    from nlpforge.sdk import TextClassifier

    # 6 epochs of 375 steps: training must outlast the interruption at 20 s on a fast machine too (3 epochs
    # took 16 s at 600 samples/s, and the SIGTERM then came while the model was being written).
    train = write_csv(tmp_path / "train.csv", toy_rows(3000, seed=1))
    validation = write_csv(tmp_path / "val.csv", toy_rows(100, seed=2))
    est = TextClassifier(base_model="bert-tiny", jobs_root=str(tmp_path / "jobs"), use_spot_instances=True,
                         hyperparameters={"epochs": 6, "learning_rate": 1e-3, "max_seq_length": 64,
                                          "batch_size": 8, "checkpoint_every": 20},
                         max_run=900, max_wait=1200, spot_interruptions=[20], spot_capacity_wait=1)
    est.fit({"train": str(train), "validation": str(validation)}, job_name="spot-builtin", logs=False)
    job = est.latest_training_job.describe()
    assert job["TrainingJobStatus"] == "Completed"
    assert [attempt["ended"] for attempt in job["Attempts"]] == ["interrupted", "exited"]
    log = (tmp_path / "jobs" / "spot-builtin" / "logs" / "training.log").read_text()
    assert "stopped by SIGTERM" in log and "resumed from" in log  # at a step, or at an epoch's end
    meta = json.loads((tmp_path / "jobs" / "spot-builtin" / "model" / "nlpforge.json").read_text())
    assert meta["resumed_from"] and "checkpoints/step-" in meta["resumed_from"]
    assert job["BillableTimeInSeconds"] < job["TrainingTimeInSeconds"]
