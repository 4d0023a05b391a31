"""More bad input to the Python API and the SDK: each gets an nlpforge error naming the fix (or, for derived data,
is repaired), and nothing is left behind."""
import json
import os
import signal
import time

import pytest

from nlpforge.sdk import Predictor
from nlpforge.sdk.predictor import deploy_model, inference
from serving_support import free_ports


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch):
    monkeypatch.setenv("NLPFORGE_TRACKING", "0")


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model.output


# -- endpoints -------------------------------------------------------------------------------------

def stopped(port: int) -> bool:
    for _ in range(100):
        if not inference("127.0.0.1", port).ping():
            return True
        time.sleep(0.1)
    return False


def test_the_server_stops_with_its_last_endpoint_whichever_was_deployed_first(model, tmp_path):
    jobs, ports = tmp_path / "jobs", free_ports()
    deploy_model(model, "a", jobs_root=str(jobs), **ports)
    records = jobs / "_endpoints"
    pid = json.loads((records / "a.json").read_text())["server_pid"]
    try:
        deploy_model(model, "b", jobs_root=str(jobs), **ports)
        deploy_model(model, "c", jobs_root=str(jobs), **ports)
        # The later endpoints found the running server and carry its pid.
        assert json.loads((records / "b.json").read_text())["server_pid"] == pid
        # One recorded before the pid was carried: the first endpoint hands it over when deleted.
        older = json.loads((records / "c.json").read_text())
        (records / "c.json").write_text(json.dumps({**older, "server_pid": None}))
        Predictor("a", jobs_root=str(jobs)).delete_endpoint()
        assert inference("127.0.0.1", ports["inference_port"]).ping()  # two endpoints are left
        assert json.loads((records / "c.json").read_text())["server_pid"] == pid
        Predictor("b", jobs_root=str(jobs)).delete_endpoint()
        assert Predictor("c", jobs_root=str(jobs)).predict("a superb film")["label"] == "pos"
        Predictor("c", jobs_root=str(jobs)).delete_endpoint()
        assert stopped(ports["inference_port"])
    finally:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
