"""Schemathesis fuzzes the OpenAPI descriptions of the inference and management APIs over real
sockets: whatever it sends, the server never answers 500. The bad-request table of
test_serving_bad_requests.py is sent first, as explicit examples of the operations its rows reach."""
import json
import re

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings

from serving_support import management, prepare_store, running_server
from test_serving_bad_requests import BAD_REQUESTS


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    prepare_store(store, tiny_model.output)
    with running_server(store, max_batch_items=8) as server:
        response = management(server).post("/models", params={"url": str(tiny_model.output), "model_name": "tiny"})
        assert response.status_code == 200, response.text
        yield server


FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def literal_length(operation) -> int:
    return len(re.sub(r"\{\w+\}", "", operation.path))


def table_examples(operations: list, which: str) -> dict:
    """The bad-request table's rows of one API as schemathesis cases, keyed by the operation each reaches
    (the most literal path that matches, so /models/tiny/traffic is the traffic route, not a version's)."""
    examples: dict = {}
    for row in (r for r in BAD_REQUESTS if r.api == which):
        matches = []
        for operation in operations:
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(operation.path))
            found = re.fullmatch(pattern, row.path)
            if operation.method.upper() == row.method and found:
                matches.append((literal_length(operation), operation, found.groupdict()))
        assert matches, f"no {which} operation takes the table's row {row.id!r}"
        _, operation, path_parameters = max(matches, key=lambda m: m[0])
        headers = dict(row.request.get("headers", {}))
        body = row.request.get("content")
        if "json" in row.request:
            body = json.dumps(row.request["json"]).encode()
            headers.setdefault("content-type", "application/json")
        if isinstance(body, str):
            body = body.encode()
        kwargs = {"body": body, "media_type": "text/plain"} if body else {}
        examples.setdefault(operation.label, []).append(operation.Case(
            path_parameters=path_parameters, query=row.request.get("params"), headers=headers or None, **kwargs))
    return examples


def fuzz(server, which: str, adjust, headers=None) -> int:
    """Send the table's rows, then generated requests, to every operation of one API; returns how many
    operations were fuzzed."""
    schema = schemathesis.openapi.from_url(server.url(which) + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    examples = table_examples(operations, which)
    for operation in operations:

        def check(case):
            adjust(case)
            response = case.call(base_url=server.url(which), headers=headers)
            assert response.status_code < 500, (case.method, case.path, case.path_parameters, case.query,
                                                response.status_code, response.text)

        for case in examples.get(operation.label, []):
            check = example(case=case)(check)
        FUZZ(given(case=operation.as_strategy())(check))()
    return len(operations)


def test_inference_api_never_answers_500(server):
    def adjust(case):
        if case.method.lower() == "post" and case.path_parameters and "model_name" in case.path_parameters:
            case.path_parameters["model_name"] = "tiny"  # reach the handler, not only the 404

    assert fuzz(server, "inference", adjust) == 8  # every route, KServe :predict and :explain included


def test_management_api_never_answers_500(server):
    def adjust(case):
        if case.method.lower() == "delete":  # keep the served model
            case.path_parameters["model_name"] = "not-" + str(case.path_parameters.get("model_name", ""))

    token = server.state.keys.management
    assert fuzz(server, "management", adjust, {"Authorization": f"Bearer {token}"}) >= 11


def test_the_fuzzed_model_still_serves(server):
    response = httpx.post(server.url("inference") + "/predictions/tiny", content="great")
    assert response.status_code == 200 and response.json()["label"] == "pos"
