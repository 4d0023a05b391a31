"""TorchServe's own API suite (pytorch/serve test/postman), unchanged, run by newman against `nlpforge serve`.

Every request the collections make is a check. A check may fail only where this file says why:
`not_applicable` (remote .mar URLs, image inputs: nlpforge is a text server that loads local folders)
or `DEVIATIONS` (each a deliberate choice, also in the README's compatibility table). A listed
deviation that starts to pass fails the run too, so the list stays true. nlpforge's own text rows,
run through the same collections, follow TorchServe's; they check answers, not only status codes.
"""
import json
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from conftest import SHARED_DATA
from serving_support import free_port

SUITE = SHARED_DATA.parent / "clients" / "torchserve-postman"
NEWMAN = Path(__file__).resolve().parent.parent / ".tools" / "node_modules" / ".bin" / "newman"
MAR_NAMES = ["mnist", "vgg16", "fastrcnn", "alexnet", "densenet161", "resnet-152-batch", "resnet-18", "squeezenet1_1",
             "deeplabv3_resnet_101_eager", "fcn_resnet_101", "maskrcnn"]
COLLECTIONS = {  # collection: TorchServe's data file
    "management": "management_data.json",
    "inference": "inference_data.json",
    "explanation": "explanation_data.json",
    "kf": "kf_inference_data.json",
}

pytestmark = [
    pytest.mark.skipif(not SUITE.is_dir(), reason=f"TorchServe's API suite is not at {SUITE}"),
    pytest.mark.skipif(not NEWMAN.exists(), reason="newman is not installed; `make tools` installs it"),
]

HANDLER = ("handler: nlpforge picks the handler from the model folder's task (nlpforge.json), so a TorchServe "
           "handler name is refused at register (400) instead of failing later, when workers start")
NUMBER_GPU = ("number_gpu: nlpforge gives each worker one device (register with device=cuda for GPUs), so a GPU "
              "count other than 0 is refused (400), not ignored")
NOT_REGISTERED = "follows from the deviation just before: the model was not registered"
NON_NUMERIC = ("a non-numeric {} is refused (400); TorchServe silently uses its default, so a typo would go "
               "unnoticed")
STARTUP_ZERO = ("startup_timeout=0 is refused (400): no worker can start in 0 s, and nlpforge starts one worker by "
                "default where TorchServe starts none")

# Checks where nlpforge answers otherwise than TorchServe, on purpose. Key: collection#iteration and the test name.
DEVIATIONS = {
    "management#7 Register Mnist Model with Invalid Handler": HANDLER,
    "management#8 UnRegister Model mnist": NOT_REGISTERED,
    "management#9 Register Mnist Model with Invalid Handler": HANDLER,
    "management#10 Scale Invalid Mnist Handler Model with Min Workers - Synchronous":
        NOT_REGISTERED + " (404, not 500)",
    "management#11 UnRegister Model mnist": NOT_REGISTERED,
    "management#23 Scale Min Workers with GPU": NUMBER_GPU,
    "management#28 Register Model with Additional Params": HANDLER,
    "management#29 UnRegister Model": NOT_REGISTERED,
    "management#30 Register Model with Additional Params and startup_timeout as 0": STARTUP_ZERO + " (400, not 500)",
    "management#31 Register Model with startup_timeout as 0": STARTUP_ZERO,
    "management#32 UnRegister Model": NOT_REGISTERED,
    "management#35 Register Model with Non integer Batch Size": NON_NUMERIC.format("batch_size"),
    "management#36 UnRegister Model Resnet152": NOT_REGISTERED,
    "management#37 Register Model with integer Batch Size but non integer max batch delay parameter":
        NON_NUMERIC.format("max_batch_delay"),
    "management#38 UnRegister Model Resnet152": NOT_REGISTERED,
    "management#50 Update GPU Count": NUMBER_GPU,
    "management#51 Update with \"Negative\" GPU Count": NUMBER_GPU,
    "management#62 Scale Workers - Invalid parameter values for both \"synchronous\" & \"min_worker\" params":
        NON_NUMERIC.format("min_worker"),
    "management#68 Scale worker by calling Update Worker API with negative min worker Count":
        "a negative worker count is the client's mistake: 400, where TorchServe answers 500",
}


def not_applicable(row: dict, item: str) -> str | None:
    """Why a check does not apply to a text server that loads local model folders, or None."""
    if "://" in row.get("url", "") + row.get("path", ""):
        return "remote .mar URL: nlpforge loads local model folders and archives only"
    if Path(row.get("file", "")).suffix in (".jpg", ".png") or row.get("file", "").endswith("mnist.json"):
        if item.endswith(("Inference Model", "Explanations Model")):
            return "image input: nlpforge serves text models"
    return None



@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    """`nlpforge serve` as TorchServe's suite runs TorchServe: token auth off, metrics on 8082 (the collections'
    metrics check names that port)."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8082)) == 0:
            pytest.fail("port 8082 is taken; TorchServe's collections read metrics from localhost:8082")
    store = tmp_path_factory.mktemp("postman-store")
    shutil.copytree(tiny_model.output, store / "toy")
    (store / "echo").mkdir()
    (store / "echo" / "nlpforge.json").write_text('{"task": "echo"}', encoding="utf-8")
    ports = {"pred-port": free_port(), "mgmt-port": free_port()}
    log = open(store / "serve.log", "w")
    command = [sys.executable, "-m", "nlpforge", "serve", "--model-store", str(store), "--no-auth", "--inference-port",
               str(ports["pred-port"]), "--management-port", str(ports["mgmt-port"]), "--metrics-port", "8082"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{ports['pred-port']}/ping").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail(f"nlpforge serve did not start: {(store / 'serve.log').read_text()[-2000:]}")
        yield store, ports
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def run_collection(server, collection: str, data: Path) -> list[dict]:
    """Run one collection over a data file; one record per request: iteration, item, failed assertions, answer."""
    store, ports = server
    report = store / f"{collection}-{data.stem}.report.json"
    variables = [f"mar_path_{name}=toy" for name in MAR_NAMES] + [f"{k}={v}" for k, v in ports.items()]
    command = [str(NEWMAN), "run", str(SUITE / f"{collection}_api_test_collection.json"), "-e",
               str(SUITE / "environment.json"), "-d", str(data), "-r", "json", "--reporter-json-export", str(report),
               "--timeout-request", "120000"]
    for variable in variables:
        command += ["--env-var", variable]
    subprocess.run(command, capture_output=True, text=True, timeout=900)
    runs = json.loads(report.read_text(encoding="utf-8"))["run"]["executions"]
    rows = json.loads(data.read_text(encoding="utf-8"))
    records = []
    for run in runs:
        response = run.get("response") or {}
        iteration = run["cursor"]["iteration"]
        records.append({"iteration": iteration, "row": rows[iteration], "item": run["item"]["name"],
                        "failed": [a["assertion"] for a in run.get("assertions", []) if a.get("error")],
                        "code": response.get("code"),
                        "body": bytes(response.get("stream", {}).get("data", [])).decode(errors="replace")[:300]})
    return records


def classify(collection: str, record: dict) -> tuple[str, str]:
    """(class, key) of one check: pass, not applicable, deviation, or undocumented."""
    name = record["row"].get("test") or record["item"]
    key = f"{collection}#{record['iteration']} {name}"
    if not record["failed"]:
        return ("stale deviation" if key in DEVIATIONS else "pass"), key
    if not_applicable(record["row"], record["item"]):
        return "not applicable", key
    return ("deviation" if key in DEVIATIONS else "undocumented"), key


def test_torchserve_api_suite_runs_unchanged(server):
    """TorchServe's four collections over their own data files: each check passes, does not apply, or is a
    documented deviation."""
    table, problems, seen = {}, [], set()
    for collection, data in COLLECTIONS.items():
        counts = Counter()
        for record in run_collection(server, collection, SUITE / data):
            kind, key = classify(collection, record)
            counts[kind] += 1
            seen.add(key)
            if kind == "undocumented":
                problems.append(f"{key}: {record['failed']} got {record['code']} {record['body']}")
            elif kind == "stale deviation":
                problems.append(f"{key}: passes now; remove it from DEVIATIONS and the README")
        table[collection] = counts
    print("\n| collection | pass | documented deviation | not applicable | undocumented |")
    print("|---|---:|---:|---:|---:|")
    for collection, counts in table.items():
        print(f"| {collection} | {counts['pass']} | {counts['deviation']} | {counts['not applicable']} | "
              f"{counts['undocumented'] + counts['stale deviation']} |")
    problems += [f"{key}: no such check in the suite" for key in DEVIATIONS if key not in seen]
    assert not problems, "\n".join(problems)
    assert sum(c["pass"] for c in table.values()) >= 100


TEXT = (SUITE / "sample_text.txt").read_text(encoding="utf-8") if SUITE.is_dir() else ""
KSERVE_TEXT = "Bloomberg has reported on the economy"


def echo(text: str) -> dict:
    return {"label": "echo", "score": 1.0, "probabilities": {"echo": 1.0}, "length": len(text), "truncated": False}


def text_rows() -> dict[str, list[dict]]:
    """nlpforge's rows for the same collections: text models, the answer checked where it is deterministic
    (the echo model) and the status code where it is learnt (the tiny classifier)."""
    common = {"worker": 1, "synchronous": "true"}
    sample, kserve = str(SUITE / "sample_text.txt"), str(SUITE / "kserve_v1_bert.json")
    return {
        "inference": [
            {**common, "url": "echo", "model_name": "echo_text", "file": sample, "content-type": "application/json",
             "expected": echo(TEXT)},
            {**common, "url": "toy", "model_name": "text_classifier", "file": sample},
        ],
        "explanation": [{**common, "url": "toy", "model_name": "text_classifier", "file": sample}],
        "kf": [
            {**common, "url": "echo", "model_name": "echo_kserve", "file": kserve, "content-type": "application/json",
             "expected": {"predictions": [echo(KSERVE_TEXT)]}},
            {**common, "url": "toy", "model_name": "text_kserve", "file": kserve},
        ],
    }


ITEMS = {"inference": 4, "explanation": 4, "kf": 5}  # requests per row in each collection


@pytest.mark.parametrize("collection", ["inference", "explanation", "kf"])
def test_text_rows_through_torchserve_collections(server, collection, tmp_path):
    data = tmp_path / f"{collection}_text_data.json"
    rows = text_rows()[collection]
    data.write_text(json.dumps(rows), encoding="utf-8")
    records = run_collection(server, collection, data)
    assert len(records) == len(rows) * ITEMS[collection]
    no_explanations = [r for r in records if r["row"]["url"] == "echo" and r["item"].endswith("Explanations Model")]
    assert all(r["code"] == 400 and "gives no explanations" in r["body"] for r in no_explanations)
    failures = [(r["iteration"], r["item"], r["failed"], r["code"], r["body"]) for r in records
                if r["failed"] and r not in no_explanations]
    assert not failures, failures
