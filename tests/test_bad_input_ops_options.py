"""Bad options of the operations commands (models, jobs, monitor, review): one line naming the problem and the
fix, never a traceback, and never a request that does something else than the one asked for, nor files written
where the user did not mean."""
import re

import pytest

from nlpforge.cli import main
from nlpforge.errors import ConfigError
from serving_support import free_port, running_server

LONG = "x" * 300  # over the 255 bytes a file or folder name may have


def cli_error(capsys, *args) -> str:
    """The one line `nlpforge ARGS` prints before it exits non-zero."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as failed:
        main([str(a) for a in args])
    error = capsys.readouterr().err
    assert failed.value.code not in (0, None) and "Traceback" not in error
    assert len(error.strip().splitlines()) == 1, error
    return error


@pytest.mark.parametrize("args", [
    ["jobs", "list", "--jobs-root", LONG],
    ["jobs", "describe", LONG, "--jobs-root", "{tmp}"],
    ["runs", "show", "job", "--jobs-root", LONG],
    ["monitor", "describe", LONG],
    ["review", "status", "--capture", "{tmp}", "--model", LONG],
    ["monitor", "run", "--baseline", LONG, "--capture", "{tmp}", "--output", "{tmp}/report"],
])
def test_a_name_longer_than_the_file_system_allows_is_one_line(tmp_path, capsys, args):
    error = cli_error(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert "longer than the file system allows" in error and "give a shorter path" in error


def no_server() -> list[str]:
    """--management-url of a port nothing listens on: a refusal must come before any request."""
    return ["--management-url", f"http://127.0.0.1:{free_port()}"]


@pytest.mark.parametrize("token", ["clé", "two words", "a\nb", " "])
def test_a_key_a_header_cannot_carry_is_named(capsys, token):
    error = cli_error(capsys, "models", "list", *no_server(), "--token", token)
    assert "the management key holds a space, a control character or a character that is not ASCII" in error


def test_an_api_key_a_header_cannot_carry_is_named(capsys):
    error = cli_error(capsys, "models", "token", "management", "--api-key", "clé", *no_server())
    assert "the API key holds a space, a control character or a character that is not ASCII" in error


def test_a_management_url_that_is_no_url_is_named(capsys):
    assert "'http://[::1' is not a URL of the model server" in cli_error(capsys, "models", "list",
                                                                        "--management-url", "http://[::1")


def test_a_key_file_that_does_not_exist_is_named_not_blamed_on_the_key(tmp_path, capsys):
    error = cli_error(capsys, "models", "list", *no_server(), "--key-file", tmp_path / "key_file.json")
    assert "key_file.json': no such file; give the server's key file" in error


@pytest.mark.parametrize("args", [["models", "list", "--token", "k"],
                                  ["models", "token", "management", "--api-key", "k"]])
def test_a_key_file_that_would_not_be_read_is_not_refused(tmp_path, capsys, args):
    """A key given on the command line wins over the key file, so a missing file is no error: the request is made
    (and finds no server here)."""
    error = cli_error(capsys, *args, *no_server(), "--key-file", tmp_path / "key_file.json")
    assert "cannot reach the model server" in error


@pytest.mark.parametrize("args, message", [
    (["unregister", "stars", ""], "version '': not a name the server gives"),
    (["unregister", "stars", "."], "version '.': not a name the server gives"),
    (["describe", ""], "model name '': not a name the server gives"),
    (["describe", "stars/2.0"], "model name 'stars/2.0': not a name the server gives"),
    (["scale", "stars", "2", "--version", ""], "version '': not a name the server gives"),
    (["scale", "stars", "2", "--version", "traffic"], "version 'traffic': no version has this name"),
    (["set-default", "stars", "all"], "version 'all': no version has this name"),
    (["traffic", "stars", "--shadow", "2.0", "--no-shadow"], "--shadow 2.0 and --no-shadow contradict each other"),
    (["traffic", "stars", "--weight", "1.0=90", "--weight", "1.0=10"], "version 1.0 has a weight already"),
])
def test_a_version_that_would_reach_another_route_is_refused_before_any_request(capsys, args, message):
    # e.g. an empty version made DELETE /models/stars, which unregisters every version
    assert message in cli_error(capsys, "models", *args, *no_server())


def test_an_empty_name_or_version_to_register_is_refused_not_replaced_by_the_default(tmp_path, capsys):
    with running_server(tmp_path / "store") as server:
        common = ["--management-url", server.url("management"), "--key-file", server.settings.key_path]
        assert "model_name '': use 1-100 ASCII" in cli_error(capsys, "models", "register", "stars", "--name", "",
                                                             *common)
        assert "model_version '': use 1-100 ASCII" in cli_error(capsys, "models", "register", "stars", "--version",
                                                                "", *common)


def test_jobs_list_with_a_filter_that_matches_nothing_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["jobs", "list", "--jobs-root", str(tmp_path), "--contains", "stars"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == "no training job's name holds 'stars'; see `nlpforge jobs list`"


@pytest.mark.parametrize("command", [["monitor", "schedule", "--baseline", "b", "--capture", "c"],
                                     ["monitor", "run", "--baseline", "b", "--capture", "c"],
                                     ["monitor", "baseline", "--data", "d.csv"]])
def test_an_empty_required_folder_is_refused_not_the_working_directory(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c").mkdir()
    assert "--output is empty; give it a value" in cli_error(capsys, *command, "--output", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_an_empty_capture_folder_of_a_run_is_refused_not_the_working_directory(tmp_path, capsys):
    error = cli_error(capsys, "monitor", "run", "--baseline", tmp_path / "b", "--capture", "", "--output",
                      tmp_path / "report")
    assert "--capture is empty" in error


def test_a_schedule_does_not_write_into_a_folder_of_other_files(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "capture").mkdir()
    error = cli_error(capsys, "monitor", "schedule", "--baseline", tmp_path / "baseline", "--capture",
                      tmp_path / "capture", "--output", model, "--runs", "1")
    assert "holds other files, which this would overwrite or mix with" in error
    assert sorted(p.name for p in model.iterdir()) == ["config.json"]


def test_a_schedule_folder_left_with_its_runs_folder_only_is_taken_again(tmp_path, capsys):
    """A schedule stopped before it wrote schedule.json leaves runs/ alone: that is its own, not other files."""
    (tmp_path / "schedule" / "runs").mkdir(parents=True)
    (tmp_path / "capture").mkdir()
    error = cli_error(capsys, "monitor", "schedule", "--baseline", tmp_path / "baseline", "--capture",
                      tmp_path / "capture", "--output", tmp_path / "schedule", "--runs", "1")
    assert "holds other files" not in error and "baseline" in error


def test_an_sdk_schedule_refuses_an_output_of_other_files_before_it_starts(tmp_path):
    from nlpforge.sdk import DefaultModelMonitor

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    monitor = DefaultModelMonitor(jobs_root=tmp_path / "jobs")
    with pytest.raises(ConfigError, match="output_s3_uri .*out: holds other files"):
        monitor.create_monitoring_schedule(endpoint_input="reviews", statistics=str(tmp_path / "b/statistics.json"),
                                           output_s3_uri=str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]


def test_a_schedule_interval_longer_than_a_wait_can_be_is_refused_before_the_first_run(tmp_path, capsys):
    # after the first run, waiting 1e308 seconds was an OverflowError traceback
    error = cli_error(capsys, "monitor", "schedule", "--baseline", tmp_path / "baseline", "--capture", tmp_path,
                      "--output", tmp_path / "schedule", "--interval", "1e308")
    assert "interval must be between 0.01 and 31536000, not 1e+308" in error


@pytest.mark.parametrize("models, message", [
    (["a b=stars"], "--models 'a b=stars': the name 'a b' must be 1-100 ASCII letters"),
    (["=stars"], "--models '=stars': the name '' must be 1-100 ASCII letters"),
    (["stars=models/a,stars=models/b"], "--models names 'stars' more than once"),  # the second was skipped
])
def test_serve_refuses_a_bad_or_repeated_model_name_before_it_listens(tmp_path, models, message):
    # the registry refused a bad name only once the ports were open, and the server took half a minute to stop
    from nlpforge.serving import ServeSettings

    with pytest.raises(ConfigError, match=re.escape(message)):
        ServeSettings.of(model_store=str(tmp_path), models=models)


@pytest.mark.parametrize("header", ["", " ", "X Sticky", "X-Clé"])
def test_a_sticky_header_no_request_can_carry_is_refused_not_never_matched(tmp_path, header):
    from nlpforge.serving import ServeSettings

    with pytest.raises(ConfigError, match=re.escape(f"--sticky-header {header!r}: not a header name")):
        ServeSettings.of(model_store=str(tmp_path), sticky_header=header)


def test_a_jobs_root_that_is_a_file_is_refused_before_the_dashboard_starts(tmp_path, monkeypatch, capsys):
    # the dashboard started, and every page said there were no jobs
    (tmp_path / "jobs").write_text("x")
    error = cli_error(capsys, "ui", "--jobs-root", tmp_path / "jobs", "--port", "0")
    assert f"--jobs-root {tmp_path / 'jobs'}: is a file; name the folder the jobs were written to" in error
    monkeypatch.setenv("NLPFORGE_JOBS_ROOT", str(tmp_path / "jobs"))
    error = cli_error(capsys, "ui", "--port", "0")
    assert f"$NLPFORGE_JOBS_ROOT ({tmp_path / 'jobs'}): is a file" in error
    monkeypatch.delenv("NLPFORGE_JOBS_ROOT")
    monkeypatch.chdir(tmp_path)
    error = cli_error(capsys, "ui", "--port", "0")
    assert f"the default jobs folder {tmp_path / 'jobs'}: is a file" in error


def test_runs_compare_refuses_a_run_named_twice(tmp_path, capsys):
    # the same run was shown in two columns
    error = cli_error(capsys, "runs", "compare", "a", "b", "a", "--jobs-root", tmp_path)
    assert "a named more than once; name each run to compare once" in error


@pytest.mark.parametrize("args, flag", [
    (["corpus", "tokenize", "--corpus", "{tmp}/c.txt", "--output", "  "], "output"),
    (["corpus", "vocab", "--corpus", "{tmp}/c.txt", "--output", ""], "output"),
    (["vectors", "train", "--corpus", "{tmp}/c.txt", "--output", " "], "output"),
    (["train", "text-classification", "--train", "{tmp}/c.txt", "--output", "{tmp}/m", "--checkpoint-dir", " "],
     "checkpoint-dir"),
])
def test_a_blank_output_path_is_refused_not_written_to(tmp_path, monkeypatch, capsys, args, flag):
    # `--output '  '` wrote a file named two spaces; `--output ''` wrote into the working folder
    (tmp_path / "c.txt").write_text("Hello world. Another sentence here.\n")
    monkeypatch.chdir(tmp_path)
    error = cli_error(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert f"{flag} is blank; give the path to write to" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_a_null_character_in_a_config_value_is_named(tmp_path, capsys):
    # open() raised ValueError: embedded null byte, a traceback
    config = tmp_path / "job.json"
    config.write_text('{"train": "t.csv", "output": "out\\u0000put"}')
    error = cli_error(capsys, "train", "text-classification", "--config", config)
    assert "output holds a null character (\\x00), which no path or name can; remove it" in error


def test_a_missing_required_flag_names_the_whole_command(capsys):
    error = cli_error(capsys, "train", "text-classification", "--train", "t.csv")
    assert "missing --output; see `nlpforge train text-classification --help`" in error


def test_a_blank_jobs_root_is_refused_not_made_a_folder_of_spaces(tmp_path, monkeypatch):
    from nlpforge.settings import jobs_root

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="jobs_root is blank; give the jobs folder"):
        jobs_root("  ")
    monkeypatch.setenv("NLPFORGE_JOBS_ROOT", " ")
    with pytest.raises(ConfigError, match=re.escape("$NLPFORGE_JOBS_ROOT is blank")):
        jobs_root()
    assert jobs_root("given") == tmp_path / "given"  # the variable is not read when a folder is given
    monkeypatch.delenv("NLPFORGE_JOBS_ROOT")
    assert jobs_root("") == tmp_path / "jobs"  # left empty: the default, as when not given
