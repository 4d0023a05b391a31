"""Bad input to `nlpforge serve` and to nlpforge's cache setting: each gives one line naming the problem and the
fix, never a traceback, and never a server listening where the user did not ask for one."""
import json
import math
from pathlib import Path

import pytest

from nlpforge.cli import main
from nlpforge.errors import ConfigError, ServingError
from nlpforge.serving import ServeSettings
from nlpforge.serving.metrics import ServerMetrics
from nlpforge.serving.registry import ModelRegistry
from nlpforge.serving.replicas import FOLDER, FORMAT, SharedState
from nlpforge.serving.security import load_or_create_keys
from nlpforge.settings import cache_root

ANY_PORTS = ["--inference-port", "0", "--management-port", "0", "--metrics-port", "0"]


def serve_error(capsys, *args) -> str:
    """The one line `nlpforge serve ARGS` prints before it exits non-zero without listening."""
    with pytest.raises(SystemExit) as failed:
        main(["serve", *ANY_PORTS, *map(str, args)])
    error = capsys.readouterr().err
    assert failed.value.code != 0 and "Traceback" not in error
    assert len(error.strip().splitlines()) == 1, error
    return error


def test_an_empty_host_is_refused_rather_than_listening_on_every_interface(tmp_path, capsys):
    for host in ("", "  "):
        with pytest.raises(ConfigError, match="--host is empty.*127.0.0.1.*0.0.0.0"):
            ServeSettings.of(model_store=str(tmp_path), host=host)
    assert "--host is empty" in serve_error(capsys, "--model-store", tmp_path / "store", "--host", "")


def test_a_key_file_that_cannot_be_written_names_key_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    places = [tmp_path / "afile" / "x.json"]
    places += [Path(p) for p in ("/proc/sys/x.json",) if Path(p).parent.is_dir()]
    for place in places:
        error = serve_error(capsys, "--model-store", tmp_path / "store", "--key-file", place)
        assert f"--key-file {place}: a new key file cannot be written there" in error


def test_a_file_that_is_not_a_key_file_is_not_to_be_deleted(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"hidden_size": 32}', encoding="utf-8")
    with pytest.raises(ServingError, match="point --key-file at another path") as refused:
        load_or_create_keys(config)
    assert "delete it to have" not in refused.value.message
    assert config.read_text(encoding="utf-8") == '{"hidden_size": 32}'


def write_state(store: Path, weights) -> Path:
    (store / FOLDER).mkdir(parents=True, exist_ok=True)
    path = store / FOLDER / "state.json"
    versions = {v: {"url": f"m1-{v}", "options": {}} for v in ("1.0", "2.0")}
    document = {"format": FORMAT, "revision": 1,
                "models": {"m1": {"versions": versions,
                                  "routing": {"default": "1.0", "weights": weights, "shadow": None}}}}
    path.write_text(json.dumps(document), encoding="utf-8")  # json writes NaN and Infinity as Python reads them
    return path


@pytest.mark.parametrize("weights", [[["1.0", math.nan]], [["1.0", math.inf], ["2.0", 1]], [["1.0", -5]],
                                     [["1.0", 0], ["2.0", 0]], [["1.0", 2e6]], [["1.0", True]]])
def test_shared_state_weights_must_be_finite_and_not_negative(tmp_path, weights):
    write_state(tmp_path, weights)
    with pytest.raises(ServingError, match="traffic weights must be numbers from 0 to 1000000, at least one above 0"):
        SharedState(tmp_path, ModelRegistry(tmp_path, ServerMetrics())).read()


def test_good_shared_state_weights_are_accepted(tmp_path):
    for weights in ([], [["1.0", 90], ["2.0", 10.5]], [["1.0", 0], ["2.0", 1]]):
        write_state(tmp_path, weights)
        assert SharedState(tmp_path, ModelRegistry(tmp_path, ServerMetrics())).read() is not None


def test_a_corrupt_state_file_at_start_says_the_replica_does_not_start(tmp_path):
    path = write_state(tmp_path, [["1.0", math.nan]])
    with pytest.raises(ServingError) as refused:
        SharedState(tmp_path, ModelRegistry(tmp_path, ServerMetrics())).open()
    assert "keeps serving" not in refused.value.message
    assert f"shared state file {path}" in refused.value.message and "cannot start" in refused.value.message


def test_a_folder_where_the_lock_file_goes_is_one_line(tmp_path, capsys):
    (tmp_path / FOLDER / "state.lock").mkdir(parents=True)
    error = serve_error(capsys, "--model-store", tmp_path, "--shared-state")
    assert f"lock file {tmp_path / FOLDER / 'state.lock'}: cannot be opened" in error


@pytest.mark.parametrize("host", ["10.255.255.1", "nosuch.invalid"])
def test_a_host_that_is_not_this_machine_is_not_called_a_port_in_use(tmp_path, capsys, host):
    error = serve_error(capsys, "--model-store", tmp_path, "--host", host)
    assert f"--host {host}:" in error and "another server" not in error


def test_a_cache_that_is_a_file_names_nlpforge_cache(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    for value in (afile, afile / "below"):
        monkeypatch.setenv("NLPFORGE_CACHE", str(value))
        with pytest.raises(ConfigError, match=f"NLPFORGE_CACHE={value}: {afile} is a file"):
            cache_root()


def test_an_empty_cache_setting_means_the_default_and_nothing_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPFORGE_CACHE", "")
    assert cache_root() == Path.home() / ".cache" / "nlpforge"
    monkeypatch.setenv("NLPFORGE_CACHE", str(tmp_path / "new" / "cache"))
    assert cache_root() == tmp_path / "new" / "cache" and not (tmp_path / "new").exists()
