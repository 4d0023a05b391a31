"""Bad input to the Python API that must get a clear error and lose no data: batch prediction into its own
input, a monitor run into its baseline, damaged model folders, inputs of the wrong type, capture windows."""
import json
import shutil

import pytest

from conftest import toy_rows, write_csv
from nlpforge import load
from nlpforge.errors import ArtifactError, ConfigError, DataError, InputError
from nlpforge.monitoring import BaselineSettings, MonitorRunSettings, monitor_run, suggest_baseline
from nlpforge.sdk.transform import batch_files
from nlpforge.tasks.files import predict_file


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model.output


def test_predicting_a_file_into_itself_is_refused(tmp_path, model):
    reviews = write_csv(tmp_path / "reviews.csv", toy_rows(5))
    before = reviews.read_bytes()
    with pytest.raises(DataError, match="the output is the input file"):
        predict_file(model, reviews, reviews)
    assert reviews.read_bytes() == before


def test_a_failed_prediction_leaves_the_earlier_output_whole(tmp_path, model, monkeypatch):
    reviews = write_csv(tmp_path / "reviews.csv", toy_rows(10))
    output = tmp_path / "predictions.jsonl"
    assert predict_file(model, reviews, output, chunk_rows=4) == 10
    earlier = output.read_bytes()
    calls = []

    def failing(self, inputs, batch_size=32):
        calls.append(len(inputs))
        if len(calls) == 2:
            raise InputError("a bad row")
        return original(self, inputs, batch_size)

    from nlpforge.tasks.base import LoadedModel

    original = LoadedModel.predict
    monkeypatch.setattr(LoadedModel, "predict", failing)
    with pytest.raises(InputError):
        predict_file(model, reviews, output, chunk_rows=4)
    assert output.read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl", "reviews.csv"]


def test_batch_transform_skips_hidden_and_earlier_output_files(tmp_path):
    for name in ("b.csv", "a.jsonl", ".DS_Store", "a.jsonl.out"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in batch_files(tmp_path)] == ["a.jsonl", "b.csv"]


@pytest.mark.parametrize("missing, message", [("tokenizer.json", "tokenizer.json is missing"),
                                              ("labels.json", "missing or without labels")])
def test_a_model_folder_missing_a_file_is_refused(tmp_path, model, missing, message):
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    (folder / missing).unlink()
    with pytest.raises(ArtifactError, match=message):
        load(folder)


@pytest.mark.parametrize("bad, message", [(None, "not None"), (5, "not 5"), (True, "not True"),
                                          (b"great film", "decode it"), (object(), "not a object")])
def test_predict_names_an_input_of_the_wrong_type(model, bad, message):
    with pytest.raises(InputError, match=message):
        load(model).predict(bad)


def test_a_tuple_is_one_text_pair_and_an_empty_list_explains_nothing(model):
    loaded = load(model)
    with pytest.raises(InputError, match="reads one text .* not a pair"):  # a pair, which this model does not read
        loaded.predict(("good film", "the plot"))
    assert loaded.explain([]) == []


def test_truncated_only_when_the_input_fills_the_model(model):
    loaded = load(model)
    for text in ("good movie", "good movie\u200b", "good movie\ufeff", "good movie\u00ad", "good movie\x00"):
        assert loaded.predict(text)[0]["truncated"] is False, repr(text)
    assert loaded.predict("good movie " * 40)[0]["truncated"] is True


@pytest.mark.parametrize("folder, device, message", [(None, "cpu", "a model folder is a path"),
                                                     ("model", "tpu", "use cpu, cuda or cuda:N"),
                                                     ("model", None, "use cpu, cuda or cuda:N")])
def test_load_names_a_bad_folder_or_device(model, folder, device, message):
    with pytest.raises((ArtifactError, ConfigError), match=message):
        load(model if folder else None, device=device)


@pytest.fixture
def baseline(tmp_path):
    data = write_csv(tmp_path / "train.csv", toy_rows(60, seed=1))
    suggest_baseline(BaselineSettings.of(data=str(data), output=str(tmp_path / "baseline")))
    return tmp_path / "baseline"


def test_a_monitor_run_never_writes_into_its_baseline_or_other_files(tmp_path, baseline):
    window = write_csv(tmp_path / "window.csv", toy_rows(20, seed=3))
    statistics = (baseline / "statistics.json").read_bytes()
    with pytest.raises(ConfigError, match="is the baseline folder"):
        monitor_run(MonitorRunSettings.of(baseline=str(baseline), data=str(window), output=str(baseline)))
    model_like = tmp_path / "other"
    model_like.mkdir()
    (model_like / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        monitor_run(MonitorRunSettings.of(baseline=str(baseline), data=str(window), output=str(model_like)))
    with pytest.raises(ConfigError, match="holds other files"):
        suggest_baseline(BaselineSettings.of(data=str(window), output=str(model_like)))
    assert (baseline / "statistics.json").read_bytes() == statistics
    assert sorted(p.name for p in model_like.iterdir()) == ["notes.txt"]
    first = monitor_run(MonitorRunSettings.of(baseline=str(baseline), data=str(window), output=str(tmp_path / "r")))
    again = monitor_run(MonitorRunSettings.of(baseline=str(baseline), data=str(window), output=str(tmp_path / "r")))
    assert first["item_count"] == again["item_count"] == 20  # an earlier run's folder may be written again


def test_capture_windows_compare_times_not_strings(tmp_path, baseline):
    folder = tmp_path / "capture" / "stars" / "1.0"
    folder.mkdir(parents=True)
    rows = toy_rows(60, seed=4)
    (folder / "capture.jsonl").write_text("".join(
        json.dumps({"timestamp": f"2026-11-29T10:{m:02d}:00.000Z", "input": rows[m]["text"]}) + "\n"
        for m in range(60)))
    for since in ("2026-11-29T10:30:00.000Z", "2026-11-29T10:30:00Z", "2026-11-29T12:30:00+02:00",
                  "2026-11-29 10:30"):
        report = monitor_run(MonitorRunSettings.of(baseline=str(baseline), capture=str(tmp_path / "capture"),
                                                   output=str(tmp_path / "r"), since=since, permutations=20))
        assert report["item_count"] == 30, since
    with pytest.raises(ConfigError, match="not an ISO 8601 time"):
        MonitorRunSettings.of(baseline=str(baseline), capture=str(tmp_path / "capture"), output=str(tmp_path / "r"),
                              since="yesterday")
    with pytest.raises(ConfigError, match="is not before --until"):
        MonitorRunSettings.of(baseline=str(baseline), capture=str(tmp_path / "capture"), output=str(tmp_path / "r"),
                              since="2026-11-29T11:00", until="2026-11-29T10:00")
