"""Bad input for the model server that once answered 500, hung, or left a worker or a file behind; each section is
one such case, with the answer it gets now."""
import json
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


# --- removing a version of weight 0 ---------------------------------------------------------------------------
def test_removing_a_version_of_weight_zero_takes_it_out_of_the_routing(tiny_model, tmp_path):
    from nlpforge.serving.replicas import check_document

    with running_server(tmp_path / "store", auth=False, shared_state=True) as server:
        client = management(server)
        for version in ("1.0", "2.0"):
            response = client.post("/models", params={"url": str(tiny_model.output), "model_name": "c",
                                                      "model_version": version, "initial_workers": 0})
            assert response.status_code == 200, response.text
        response = client.put("/models/c/traffic", json={"weights": {"1.0": 1, "2.0": 0}, "shadow": None})
        assert response.status_code == 200, response.text
        assert client.delete("/models/c/2.0").status_code == 200
        assert client.get("/models/c/traffic").json()["weights"] == {"1.0": 1.0}
        for body in ({}, {"shadow": "1.0"}, {"weights": {"1.0": 3}}):
            response = client.put("/models/c/traffic", json=body)
            assert response.status_code == 200, response.text
        state = json.loads((tmp_path / "store" / ".nlpforge-replicas" / "state.json").read_text())
        check_document(state)  # the replicas' file names only versions it holds
        assert state["models"]["c"]["routing"] == {"default": "1.0", "weights": [["1.0", 3.0]], "shadow": "1.0"}
        response = client.post("/models", params={"url": str(tiny_model.output), "model_name": "c",
                                                  "model_version": "2.0", "initial_workers": 0})
        assert response.status_code == 200, response.text
        assert client.get("/models/c/traffic").json()["weights"] == {"1.0": 3.0}  # no stale weight comes back
