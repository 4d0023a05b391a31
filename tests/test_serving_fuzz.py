"""Schemathesis fuzzes the OpenAPI descriptions of the inference and management APIs over real
sockets: whatever it sends, the server never answers 500."""
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from serving_support import management, running_server


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("store"), max_batch_items=8) as server:
        response = management(server).post("/models", params={"url": str(tiny_model.output), "model_name": "tiny"})
        assert response.status_code == 200, response.text
        yield server


FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def fuzz(server, which: str, adjust, headers=None) -> int:
    """Send generated requests to every operation of one API; returns how many operations were fuzzed."""
    schema = schemathesis.openapi.from_url(server.url(which) + "/openapi.json")
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def check(case):
            adjust(case)
            response = case.call(base_url=server.url(which), headers=headers)
            assert response.status_code < 500, (case.method, case.path, case.path_parameters, case.query,
                                                response.status_code, response.text)

        check()
        operations += 1
    return operations


def test_inference_api_never_answers_500(server):
    def adjust(case):
        if case.method.lower() == "post" and case.path_parameters and "model_name" in case.path_parameters:
            case.path_parameters["model_name"] = "tiny"  # reach the handler, not only the 404

    assert fuzz(server, "inference", adjust) == 7


def test_management_api_never_answers_500(server):
    def adjust(case):
        if case.method.lower() == "delete":  # keep the served model
            case.path_parameters["model_name"] = "not-" + str(case.path_parameters.get("model_name", ""))

    token = server.state.keys.management
    assert fuzz(server, "management", adjust, {"Authorization": f"Bearer {token}"}) >= 11


def test_the_fuzzed_model_still_serves(server):
    response = httpx.post(server.url("inference") + "/predictions/tiny", content="great")
    assert response.status_code == 200 and response.json()["label"] == "pos"
