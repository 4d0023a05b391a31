"""SageMaker's PyTorch inference contract as a handler kind: a model folder that holds code/inference.py.

    model/                         what the training script saved: model.pth, a vocabulary, ...
    model/code/inference.py        model_fn(model_dir); optional input_fn, predict_fn, output_fn
    model/code/requirements.txt    optional; checked against the server's environment, never installed

This is the layout SageMaker gives model.tar.gz. The worker imports inference.py once, calls
`model_fn(model_dir)` once, then runs each request through

    input_fn(body, content_type) -> predict_fn(data, model) -> output_fn(prediction, accept)

with the SageMaker PyTorch inference toolkit's defaults for the functions the script leaves out:
JSON, CSV or NPY into a float tensor, `model(tensor)` under no_grad, and JSON, CSV or NPY by
Accept. As in the toolkit, a JSON or CSV body reaches input_fn as str, any other as bytes; a
missing Accept (or */*) is $SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT, else application/json; and
output_fn may return the body or (body, content_type). `transform_fn(model, body, content_type,
accept)` replaces the three. Each function may take one more argument, the context (None here).

The inference route hands these handlers the raw body and headers (`raw_bodies`) and answers with
what output_fn returned. A batch is a list of requests, each run on its own: the toolkit has no
batch contract. Errors answer one request and leave the worker serving: an error raised in
input_fn is a 400, an unsupported Content-Type 415, an unsupported Accept 406, an error in
predict_fn or output_fn a 500, each with the script's message; an exception with an HTTP
`status_code` (the toolkit's BaseInferenceToolkitError) answers with that status.
"""
import ast
import importlib.util
import inspect
import io
import json
import logging
import os
import sys
from pathlib import Path

from nlpforge.errors import ArtifactError
from nlpforge.serving.handler import SCRIPT_TASK, Handler

log = logging.getLogger("nlpforge.serving")

JSON, CSV, NPY = "application/json", "text/csv", "application/x-npy"
UTF8_TYPES = (JSON, CSV)  # decoded to str before input_fn, as the toolkit does
SCRIPT_FUNCTIONS = ("input_fn", "predict_fn", "output_fn")


def entry_point(folder) -> Path:
    return Path(folder) / "code" / "inference.py"


def is_script_folder(folder) -> bool:
    """Whether a model folder is served through SageMaker's inference contract (it holds code/inference.py)."""
    return entry_point(folder).is_file()


def check_entry_point(folder) -> None:
    """Refuse, without running it, an inference.py that cannot be imported or defines no model_fn."""
    path = entry_point(folder)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path}: cannot be read ({error})") from None
    except SyntaxError as error:
        raise ArtifactError(f"{path}, line {error.lineno}: {error.msg}; fix the inference script") from None
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
    if "model_fn" not in defined and "*" not in defined:
        raise ArtifactError(f"{path} defines no model_fn(model_dir): SageMaker's PyTorch toolkit cannot guess how "
                            "to load a model, so the script must; add `def model_fn(model_dir):` that loads and "
                            "returns the model")


class ScriptFailure(Exception):
    """One request's failure, answered with `status` and the message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ScriptHandler(Handler):
    """Serves a model folder through its code/inference.py (SageMaker's model_fn/input_fn/predict_fn/output_fn)."""

    task = SCRIPT_TASK
    raw_bodies = True

    def __init__(self):
        self.model = None
        self.functions: dict = {}
        self.transform_fn = None

    def setup(self, folder: str, backend: str = "torch", threads: int = 1, device: str = "cpu") -> None:
        """Import the script and call its model_fn, which puts the model where it wants (SageMaker's
        scripts pick their own device, usually cuda when torch sees one)."""
        import torch

        if backend != "torch":
            raise ArtifactError(f"{folder}: backend {backend!r} serves nlpforge model folders only; an inference.py "
                                "model runs as its script says (backend torch)")
        torch.set_num_threads(max(1, threads))
        check_entry_point(folder)
        check_requirements(Path(folder) / "code" / "requirements.txt")
        module = import_script(entry_point(folder))
        self.transform_fn = getattr(module, "transform_fn", None)
        given = [name for name in SCRIPT_FUNCTIONS if getattr(module, name, None) is not None]
        if self.transform_fn is not None and given:
            raise ArtifactError(f"{entry_point(folder)}: transform_fn cannot be used with {', '.join(given)}; "
                                "define transform_fn alone, or input_fn/predict_fn/output_fn")
        defaults = {"input_fn": default_input_fn, "predict_fn": default_predict_fn, "output_fn": default_output_fn}
        self.functions = {name: getattr(module, name, None) or defaults[name] for name in SCRIPT_FUNCTIONS}
        try:
            self.model = call(module.model_fn, str(folder))
        except Exception as error:  # noqa: BLE001 - the script's error, reported to the register call
            log.error("model_fn of %s failed", folder, exc_info=True)
            raise ArtifactError(f"{entry_point(folder)}: model_fn({folder!r}) raised {type(error).__name__}: "
                                f"{error}") from None

    def decode_request(self, value: dict) -> dict:
        """`value` is the route's {"body": bytes, "content_type": str or None, "accept": str or None}."""
        accept = value.get("accept")
        if not accept or accept.strip() == "*/*":
            accept = os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", JSON)
        return {"body": value["body"], "content_type": value.get("content_type") or None, "accept": accept}

    def predict(self, batch: list[dict]) -> list[dict]:
        """One answer per request: {"body": bytes, "content_type": str}, or {"error": message, "status": code}."""
        answers = []
        for request in batch:
            try:
                answers.append(self.transform(request))
            except ScriptFailure as failure:
                answers.append({"error": failure.message, "status": failure.status})
        return answers

    def transform(self, request: dict) -> dict:
        body, content_type, accept = request["body"], request["content_type"], request["accept"]
        if content_type in UTF8_TYPES:
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ScriptFailure(400, f"the {content_type} body is not UTF-8 ({error})") from None
        if self.transform_fn is not None:
            result = run("transform_fn", 500, self.transform_fn, self.model, body, content_type, accept)
        else:
            data = run("input_fn", 400, self.functions["input_fn"], body, content_type)
            prediction = run("predict_fn", 500, self.functions["predict_fn"], data, self.model)
            result = run("output_fn", 500, self.functions["output_fn"], prediction, accept)
        answered_type = accept
        if isinstance(result, tuple) and len(result) == 2:
            result, answered_type = result
        return {"body": encoded(result), "content_type": str(answered_type)}


def import_script(path: Path):
    """Import inference.py as the module `inference`, with code/ on sys.path as SageMaker puts it there."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - the script's error, reported to the register call
        log.error("importing %s failed", path, exc_info=True)
        raise ArtifactError(f"{path}: importing it raised {type(error).__name__}: {error}; fix the script, or put "
                            "what it imports in code/ or code/requirements.txt") from None
    return module


def check_requirements(path: Path) -> None:
    """Refuse a code/requirements.txt whose packages the server's environment lacks: the server runs offline and
    installs nothing, where SageMaker would pip-install them."""
    if not path.is_file():
        return
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    missing = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            raise ArtifactError(f"{path}: {line!r} is not a requirement (e.g. transformers>=4.0)") from None
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            missing.append(str(requirement))
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            missing.append(f"{requirement} (installed: {installed})")
    if missing:
        raise ArtifactError(f"{path} asks for {', '.join(missing)}, which the server's environment lacks; the "
                            "server installs nothing (it runs offline): pip install them where `nlpforge serve` runs")


def call(function, *arguments):
    """Call a handler function, adding the context (None) when it takes one more argument, as the toolkit does."""
    try:
        parameters = inspect.signature(function).parameters.values()
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) == len(arguments) + 1 and positional[-1].default is inspect.Parameter.empty:
            return function(*arguments, None)
    except (TypeError, ValueError):  # a builtin or C function without a signature
        pass
    return function(*arguments)


def run(name: str, status: int, function, *arguments):
    """Call one of the script's functions; its error becomes a ScriptFailure with `status` (or its own)."""
    try:
        return call(function, *arguments)
    except ScriptFailure:
        raise
    except Exception as error:  # noqa: BLE001 - the script's error answers this request; the worker serves on
        code = getattr(error, "status_code", None)
        if isinstance(code, int) and 400 <= code <= 599:
            status = code
        elif isinstance(error, (NameError, ImportError, MemoryError)):
            status = 500  # a bug in the script, not in the request
        log.log(logging.ERROR if status >= 500 else logging.INFO, "%s raised %s", name, type(error).__name__,
                exc_info=status >= 500)
        message = getattr(error, "message", None) or str(error) or type(error).__name__
        raise ScriptFailure(status, f"{name} raised {type(error).__name__}: {message}") from None


def encoded(result) -> bytes:
    """output_fn's body as bytes: bytes as they are, str as UTF-8, anything else as JSON (as TorchServe does)."""
    if isinstance(result, (bytes, bytearray)):
        return bytes(result)
    if isinstance(result, str):
        return result.encode("utf-8")
    try:
        return json.dumps(result, default=to_list).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise ScriptFailure(500, f"output_fn returned a {type(result).__name__}, which is not bytes, str or JSON "
                                 f"({error}); return the encoded body") from None


def to_list(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# --- the toolkit's defaults ------------------------------------------------------------------------------
def default_input_fn(body, content_type):
    """JSON, CSV or NPY into a float tensor."""
    import numpy as np
    import torch

    if content_type == JSON:
        array = np.array(json.loads(body), dtype=np.float32)
    elif content_type == CSV:
        array = np.genfromtxt(io.StringIO(body), dtype=np.float32, delimiter=",")
    elif content_type == NPY:
        array = np.load(io.BytesIO(body), allow_pickle=False)  # the toolkit allows pickles; a request must not
    else:
        raise ScriptFailure(415, f"Content-Type {content_type} is not supported by the default input_fn (it reads "
                                 f"{JSON}, {CSV} and {NPY}); send one of those, or define input_fn in inference.py")
    return torch.from_numpy(np.ascontiguousarray(array))


def default_predict_fn(data, model):
    """model(data) in eval mode, without gradients."""
    import torch

    with torch.no_grad():
        model.eval()
        return model(data)


def default_output_fn(prediction, accept):
    """The prediction as JSON, CSV or NPY: the first type of Accept that is one of them."""
    import numpy as np
    import torch

    if isinstance(prediction, torch.Tensor):
        prediction = prediction.detach().cpu().numpy()
    for content_type in (part.split(";")[0].strip().lower() for part in accept.split(",")):
        if content_type == JSON:
            return json.dumps(prediction, default=to_list), JSON
        if content_type == CSV:
            text = io.StringIO()
            np.savetxt(text, np.atleast_1d(np.asarray(prediction)), delimiter=",", fmt="%s")
            return text.getvalue(), CSV
        if content_type == NPY:
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(prediction), allow_pickle=False)
            return buffer.getvalue(), NPY
    raise ScriptFailure(406, f"Accept {accept} is not supported by the default output_fn (it writes {JSON}, {CSV} "
                             f"and {NPY}); ask for one of those, or define output_fn in inference.py")
