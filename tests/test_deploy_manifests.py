"""The cluster recipes in deploy/ hold against their schemas, and their nlpforge command lines against the CLI.

Plain Kubernetes objects: kubernetes_validate's strict schemas. The PyTorchJob: a JSON Schema derived
from the Kubeflow training SDK's OpenAPI models (kubeflow-training), whose pod templates are
Kubernetes' own PodTemplateSpec. The Ray Serve config: Ray's ServeDeploySchema, with unknown keys
refused. Each nlpforge command line is parsed by the typer command it names and built into its
settings, so a renamed flag or an out-of-range value fails here.
"""
import copy
import importlib
import importlib.resources
import inspect
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from nlpforge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
RAY = DEPLOY / "ray"

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
K8S_VERSION = kubernetes_validate.latest_version()
DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"

# What Kubernetes and the training operator put in a container's environment, for $(VAR) in its arguments.
OPERATOR_ENV = {"MASTER_ADDR": "nlpforge-stars-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "2", "RANK": "1"}
FIELD_REFS = {"status.podIP": "10.1.2.3", "metadata.name": "nlpforge-7d9f8-x2k4q"}


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def manifests() -> list[tuple[str, dict]]:
    return [(f"{path.name}:{d['kind']}", d) for path in sorted(KUBERNETES.glob("*.yaml")) for d in documents(path)]


def of_kind(kind: str) -> list[dict]:
    return [d for _, d in manifests() if d["kind"] == kind]


def containers(manifest: dict):
    """(pod spec, container) of every container in a manifest, however deep its pod templates sit."""
    if isinstance(manifest, dict):
        if isinstance(manifest.get("containers"), list):
            for container in manifest["containers"]:
                yield manifest, container
        for value in manifest.values():
            yield from containers(value)
    elif isinstance(manifest, list):
        for value in manifest:
            yield from containers(value)


# --- the nlpforge command lines ---------------------------------------------------------------------------

def expanded(container: dict, extra_env: dict) -> list[str]:
    """command + args with Kubernetes' $(VAR) expansion; a variable the container does not have is an error
    (Kubernetes would pass it on as literal text)."""
    env = dict(extra_env)
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            env[variable["name"]] = FIELD_REFS[variable["valueFrom"]["fieldRef"]["fieldPath"]]

    def replace(match):
        assert match.group(1) in env, f"$({match.group(1)}) is not in the container's environment"
        return env[match.group(1)]

    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, part)
            for part in container.get("command", []) + container.get("args", [])]


def parsed(argv: list[str]):
    """The settings an `nlpforge ...` command line builds, parsed by the CLI's own command: flags, types,
    choices, limits and required settings are checked, nothing is run."""
    import typer

    from nlpforge.cli import app
    from nlpforge.cli.options import build_settings, settings_values
    from nlpforge.serving.settings import ServeSettings
    from nlpforge.training.settings import job_class

    assert argv[0] == "nlpforge", argv
    command, path, rest = typer.main.get_command(app), ["nlpforge"], list(argv[1:])
    while hasattr(command, "get_command"):
        name = rest.pop(0)
        command, path = command.get_command(None, name), path + [name]
        assert command is not None, f"`{' '.join(path)}` is not an nlpforge command"
    settings_class = {"train": lambda: job_class(path[2]), "serve": lambda: ServeSettings}[path[1]]()
    context = command.make_context(" ".join(path), rest)   # a UsageError on an unknown flag or bad value
    given = {k: v for k, v in context.params.items() if k != "config"}
    return build_settings(settings_class, settings_values(settings_class, None, given), " ".join(path))


def command_lines(manifest: dict, extra_env: dict | None = None) -> list[tuple[dict, dict, list[str]]]:
    """(pod spec, container, expanded argv) of every container that runs nlpforge."""
    return [(pod, container, expanded(container, extra_env or {})) for pod, container in containers(manifest)
            if (container.get("command") or [""])[0] == "nlpforge"]


def test_parsing_refuses_a_renamed_flag_and_a_bad_value():
    good = ["nlpforge", "train", "text-classification", "--output", "out", "--train", "t.csv"]
    assert parsed(good + ["--checkpoint-dir", "c"]).checkpoint.checkpoint_dir == "c"
    with pytest.raises(Exception, match="No such option: --checkpoint-folder"):
        parsed(good + ["--checkpoint-folder", "c"])
    with pytest.raises(ConfigError, match="node-rank"):
        parsed(good + ["--nnodes", "2", "--node-rank", "2"])
    with pytest.raises(Exception, match="'bf32' is not one of"):
        parsed(good + ["--precision", "bf32"])
    with pytest.raises(ConfigError, match="--output"):
        parsed(good[:3] + ["--train", "t.csv"])
    with pytest.raises(AssertionError, match=r"\$\(NODE_RANK\)"):
        expanded({"command": ["nlpforge"], "args": ["--node-rank=$(NODE_RANK)"]}, OPERATOR_ENV)


# --- plain Kubernetes objects -------------------------------------------------------------------------------

PLAIN = [(name, d) for name, d in manifests() if d["apiVersion"] != "kubeflow.org/v1"]


@pytest.mark.parametrize("manifest", [d for _, d in PLAIN], ids=[name for name, _ in PLAIN])
def test_kubernetes_objects_are_valid(manifest):
    assert kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_kubernetes_validation_refuses_a_wrong_field():
    deployment = copy.deepcopy(of_kind("Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/ping"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    service = copy.deepcopy(of_kind("Service")[0])
    service["spec"]["ports"][0]["port"] = "8080"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSION, strict=True)


# --- the PyTorchJob -----------------------------------------------------------------------------------------

def k8s_definitions() -> dict:
    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{K8S_VERSION}-local-strict"
    return json.loads((folder / "_definitions.json").read_text(encoding="utf-8"))


def k8s_definition_name(python_name: str, names) -> str:
    """Kubernetes' definition of a Python client model: V1PodTemplateSpec -> io.k8s.api.core.v1.PodTemplateSpec,
    K8sIoApiAutoscalingV2MetricSpec -> io.k8s.api.autoscaling.v2.MetricSpec, Quantity -> io.k8s...resource.Quantity."""
    parts = lambda n: n.split(".")  # noqa: E731
    matches = [n for n in names if python_name.lower() in (
        parts(n)[-1].lower(), "".join(parts(n)[-2:]).lower(), n.replace("io.k8s.", "k8sio.").replace(".", "").lower())]
    assert len(matches) == 1, f"{python_name}: Kubernetes definitions {matches}"
    return matches[0]


def kubeflow_schema(root: str = "KubeflowOrgV1PyTorchJob") -> dict:
    """A JSON Schema of a Kubeflow training model, derived from its OpenAPI model classes: every property with
    its type, the required ones (those the generated setters refuse as None), no unknown keys; Kubernetes
    types refer to kubernetes_validate's strict definitions."""
    models = pytest.importorskip("kubeflow.training.models", reason="pip install kubeflow-training")
    names = k8s_definitions()["$defs"].keys()
    defs: dict = {}

    def schema_of(type_name: str) -> dict:
        if match := re.fullmatch(r"list\[(.+)\]", type_name):
            return {"type": "array", "items": schema_of(match.group(1))}
        if match := re.fullmatch(r"dict\(str, (.+)\)", type_name):
            return {"type": "object", "additionalProperties": schema_of(match.group(1))}
        primitive = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
                     "datetime": "string", "date": "string"}
        if type_name in primitive:
            return {"type": primitive[type_name]}
        if type_name == "object":
            return {}
        if not type_name.startswith("KubeflowOrg"):
            return {"$ref": f"{DEFINITIONS_ID}#/$defs/{k8s_definition_name(type_name, names)}"}
        if type_name not in defs:
            cls = getattr(models, type_name)
            defs[type_name] = {}
            required = re.findall(r"Invalid value for `(\w+)`, must not be `None`", inspect.getsource(cls))
            defs[type_name] = {
                "type": "object", "additionalProperties": False,
                "properties": {cls.attribute_map[a]: schema_of(t) for a, t in cls.openapi_types.items()},
                "required": sorted(cls.attribute_map[a] for a in set(required))}
        return {"$ref": f"#/$defs/{type_name}"}

    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema_of(root), "$defs": defs}


def validate_pytorchjob(manifest: dict) -> None:
    import jsonschema
    from referencing import Registry, Resource

    registry = Registry().with_resource(DEFINITIONS_ID, Resource.from_contents(k8s_definitions()))
    assert manifest["apiVersion"] == "kubeflow.org/v1" and manifest["kind"] == "PyTorchJob"
    jsonschema.Draft202012Validator(kubeflow_schema(), registry=registry).validate(manifest)


@pytest.fixture(scope="module")
def pytorchjob() -> dict:
    jobs = of_kind("PyTorchJob")
    assert len(jobs) == 1
    return jobs[0]


def test_the_pytorchjob_schema_is_derived_from_the_operator_models():
    schema = kubeflow_schema()
    spec = schema["$defs"]["KubeflowOrgV1PyTorchJobSpec"]
    assert {"pytorchReplicaSpecs", "runPolicy"} <= set(spec["required"])
    assert set(spec["properties"]) >= {"elasticPolicy", "nprocPerNode", "pytorchReplicaSpecs", "runPolicy"}
    template = schema["$defs"]["KubeflowOrgV1ReplicaSpec"]["properties"]["template"]
    assert template["$ref"].endswith("io.k8s.api.core.v1.PodTemplateSpec")


def test_pytorchjob_is_valid(pytorchjob):
    validate_pytorchjob(pytorchjob)


@pytest.mark.parametrize("break_it, message", [
    (lambda job: job["spec"].update(pytorchReplicaSpec=job["spec"].pop("pytorchReplicaSpecs")), "pytorchReplicaSpec"),
    (lambda job: job["spec"]["runPolicy"].update(backoffLimit="4"), "'4' is not of type 'integer'"),
    (lambda job: job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
     .update(volumeMount=[]), "volumeMount"),
    (lambda job: job["spec"].pop("runPolicy"), "runPolicy"),
], ids=["renamed-replica-specs", "string-for-integer", "unknown-container-field", "missing-run-policy"])
def test_pytorchjob_validation_refuses_a_broken_copy(pytorchjob, break_it, message):
    import jsonschema

    broken = copy.deepcopy(pytorchjob)
    break_it(broken)
    with pytest.raises(jsonschema.ValidationError, match=re.escape(message)):
        validate_pytorchjob(broken)


def test_pytorchjob_runs_nlpforge_train_on_every_node_resuming_from_shared_checkpoints(pytorchjob):
    spec = pytorchjob["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    nodes = sum(r["replicas"] for r in replicas.values())
    jobs = {}
    for role, replica in replicas.items():
        (pod, container, argv), = command_lines(replica["template"], OPERATOR_ENV | {"RANK": "0" if role == "Master"
                                                                                   else "1"})
        assert container["name"] == "pytorch", "the operator sets its environment on the container named pytorch"
        jobs[role] = job = parsed(argv)
        assert job.distributed.nnodes == nodes and job.distributed.nproc == int(spec["nprocPerNode"])
        assert job.checkpoint.resume == "auto" and job.checkpoint.checkpoint_dir
        env = {v["name"]: v.get("value") for v in container["env"]}
        assert env["HF_HUB_OFFLINE"] == "1"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        shared = [mounts[name] for name in claims if name in mounts]
        for folder in (job.checkpoint.checkpoint_dir, job.output, job.data.train):
            assert any(folder.startswith(mount + "/") for mount in shared), f"{folder} is not on the shared volume"
        (claim,) = claims.values()
        (volume_claim,) = of_kind("PersistentVolumeClaim")
        assert claim == volume_claim["metadata"]["name"] and "ReadWriteMany" in volume_claim["spec"]["accessModes"]
    master, worker = jobs["Master"], jobs["Worker"]
    assert master.distributed.node_rank == 0 and worker.distributed.node_rank == 1
    assert master.distributed.master_addr == FIELD_REFS["status.podIP"]
    assert worker.distributed.master_addr == OPERATOR_ENV["MASTER_ADDR"]
    assert master.distributed.master_port == worker.distributed.master_port == int(OPERATOR_ENV["MASTER_PORT"])
    ports = replicas["Master"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "pytorchjob-port", "containerPort": int(OPERATOR_ENV["MASTER_PORT"])} in ports
    for group in ("data", "model", "train", "eval", "checkpoint", "runtime", "debugger"):
        assert getattr(master, group) == getattr(worker, group), f"Master and Worker train with other {group} settings"
    assert master.output == worker.output


# --- serving on Kubernetes ----------------------------------------------------------------------------------

def test_deployment_serves_the_shared_model_store_behind_the_service():
    (deployment,) = of_kind("Deployment")
    (service,) = of_kind("Service")
    (pod, container, argv), = command_lines(deployment)
    settings = parsed(argv)
    assert deployment["spec"]["replicas"] >= 2 and settings.host == "0.0.0.0" and settings.shared_state
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"inference": settings.inference_port, "management": settings.management_port,
                     "metrics": settings.metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": "inference"}
    volumes = {v["name"]: v for v in pod["volumes"]}

    def volume_of(path: str) -> dict:
        (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) in Path(path).parents]
        return volumes[mount["name"]]

    (claim,) = of_kind("PersistentVolumeClaim")
    assert volume_of(settings.model_store)["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "secret" in volume_of(settings.key_file)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > settings.shutdown_timeout


# --- Ray Serve ----------------------------------------------------------------------------------------------

def unknown_keys(model, data, where: str = "") -> list[str]:
    """Keys of `data` that the pydantic `model` has no field for, at any depth. Ray's schemas accept them, for
    forward compatibility, so a misspelt option would otherwise be dropped."""
    from pydantic import BaseModel

    def models_in(annotation):
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in getattr(annotation, "__args__", ()) for m in models_in(arg)]

    found = []
    if not isinstance(data, dict):
        return found
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            found.append(f"{where}{key}")
            continue
        for inner in models_in(field.annotation):
            for index, item in (enumerate(value) if isinstance(value, list) else [(None, value)]):
                found += unknown_keys(inner, item, f"{where}{key}{'' if index is None else f'[{index}]'}.")
    return found


def validate_ray_config(config: dict) -> None:
    schema = pytest.importorskip("ray.serve.schema", reason="pip install 'ray[serve]'")
    schema.ServeDeploySchema.model_validate(config)
    unknown = unknown_keys(schema.ServeDeploySchema, config)
    if unknown:
        raise ValueError(f"unknown Ray Serve option(s): {', '.join(unknown)}")


@pytest.fixture(scope="module")
def ray_config() -> dict:
    (config,) = documents(RAY / "serve_config.yaml")
    return config


@pytest.fixture(scope="module")
def ray_module():
    pytest.importorskip("ray.serve", reason="pip install 'ray[serve]'")
    sys.path.insert(0, str(RAY))
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in deploy/
    try:
        yield importlib.import_module("nlpforge_serve")
    finally:
        sys.path.remove(str(RAY))
        sys.dont_write_bytecode = writes_bytecode


def test_ray_serve_config_is_valid(ray_config):
    validate_ray_config(ray_config)


@pytest.mark.parametrize("break_it, message", [
    (lambda c: c["applications"][0]["deployments"][0].update(num_replicas="two"), "num_replicas"),
    (lambda c: c["applications"][0]["deployments"][0].update(replicas=2), "applications[0].deployments[0].replicas"),
    (lambda c: c["applications"][0].pop("import_path"), "import_path"),
], ids=["wrong-type", "unknown-option", "missing-import-path"])
def test_ray_serve_validation_refuses_a_broken_copy(ray_config, break_it, message):
    broken = copy.deepcopy(ray_config)
    break_it(broken)
    with pytest.raises(Exception, match=re.escape(message)):
        validate_ray_config(broken)


def test_ray_application_builds_nlpforge_serve_settings(ray_config, ray_module):
    (application,) = ray_config["applications"]
    module_name, _, builder = application["import_path"].partition(":")
    assert module_name == ray_module.__name__ and callable(getattr(ray_module, builder))
    getattr(ray_module, builder)(application["args"])
    assert {d["name"] for d in application["deployments"]} == {ray_module.NlpforgeServer.name}
    args = {k: v for k, v in application["args"].items() if k not in ("management_prefix", "startup_timeout")}
    settings = ray_module.server_settings(args)
    assert settings.model_store == application["args"]["model_store"] and settings.host == "127.0.0.1"
    assert settings.shared_state, "replicas on one model store share their versions and traffic"
    with pytest.raises(ConfigError, match="model-stor"):
        ray_module.server_settings({**args, "model_stor": "/x"})
    with pytest.raises(ConfigError, match="inference_port"):
        ray_module.server_settings({**args, "inference_port": 9000})
