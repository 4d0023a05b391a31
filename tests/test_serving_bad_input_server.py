"""Bad input for the model server that once answered 500, hung, or left a worker or a file behind; each section is
one such case, with the answer it gets now."""
import tarfile
from pathlib import Path

import pytest

from serving_support import management, running_server


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("store"), auth=False, request_timeout=20) as server:
        response = management(server).post("/models", params={"url": str(tiny_model.output), "model_name": "tiny",
                                                               "max_batch_delay": 5})
        assert response.status_code == 200, response.text
        yield server


def store_of(server) -> Path:
    return Path(server.settings.model_store)


# --- archives and urls ----------------------------------------------------------------------------------------
def test_a_truncated_archive_is_a_400_and_leaves_nothing(server, tiny_model):
    store = store_of(server)
    with tarfile.open(store / "whole.tar.gz", "w:gz") as tar:
        tar.add(tiny_model.output, arcname="clf")
    (store / "truncated.tar.gz").write_bytes((store / "whole.tar.gz").read_bytes()[:2000])
    response = management(server).post("/models", params={"url": "truncated.tar.gz"})
    assert response.status_code == 400, response.text
    assert "cannot extract" in response.json()["message"]
    assert list((store / ".extracted").glob("truncated*")) == []


@pytest.mark.parametrize("url", ["a" * 300, "/" + "c" * 300, "d" * 300 + ".tar.gz", "e/" + "f" * 256 + "/g"])
def test_a_url_with_an_overlong_name_is_a_400_naming_the_url(server, url):
    response = management(server).post("/models", params={"url": url})
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert message.startswith(f"url '{url[:100]}") and "over the limit of 255" in message, message


def test_an_archive_whose_name_is_near_the_limit_is_extracted(server, tiny_model):
    name = "h" * 240 + ".tar.gz"
    with tarfile.open(store_of(server) / name, "w:gz") as tar:
        tar.add(tiny_model.output, arcname="clf")
    response = management(server).post("/models", params={"url": name, "model_name": "long",
                                                           "initial_workers": 0})
    assert response.status_code == 200, response.text
    assert management(server).delete("/models/long").status_code == 200
