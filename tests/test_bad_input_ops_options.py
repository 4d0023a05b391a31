"""Bad options of the operations commands (models, jobs, monitor, review): one line naming the problem and the
fix, never a traceback, and never a request that does something else than the one asked for, nor files written
where the user did not mean."""
import pytest

from nlpforge.cli import main

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
