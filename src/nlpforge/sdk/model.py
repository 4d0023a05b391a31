"""PyTorchModel: SageMaker's way to serve a script-mode model with an inference script, on this machine.

    from nlpforge.sdk import PyTorchModel
    model = PyTorchModel(model_data="model.tar.gz", entry_point="inference.py", source_dir="code",
                         role=role, framework_version="1.6.0", py_version="py3")
    predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.xlarge",
                             serializer=JSONSerializer(), deserializer=JSONDeserializer())
    predictor.predict([{"features": ["Loved it"]}])
    predictor.delete_endpoint()

`deploy` does what SageMaker's repack does, on disk: the model files (a folder, or model.tar.gz
extracted) at the top of a served folder, the inference code (source_dir, or the entry point
alone) under code/, the entry point as code/inference.py. The model server serves such a folder
through SageMaker's inference contract (nlpforge.serving.script_handler). `Estimator.deploy(
entry_point=...)` packages a job's model folder the same way.
"""
import os
import shutil
import tarfile
import zlib
from pathlib import Path

from nlpforge.errors import EndpointError

# SageMaker's Model, FrameworkModel and PyTorchModel arguments that mean nothing on one machine: accepted, so that
# notebooks run unchanged.
SAGEMAKER_MODEL_ARGUMENTS = {
    "role", "framework_version", "py_version", "image_uri", "predictor_cls", "env", "vpc_config", "sagemaker_session",
    "enable_network_isolation", "model_kms_key", "image_config", "code_location", "container_log_level",
    "dependencies", "git_config", "model_server_workers", "resources", "model_reference_arn",
    "additional_model_data_sources", "model_package_arn", "inference_spec_name"}
CODE_IGNORED = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".venv", ".ipynb_checkpoints")


class PyTorchModel:
    """A trained model (model.tar.gz or a folder) and the inference script that serves it, as SageMaker's
    `sagemaker.pytorch.PyTorchModel`. role, framework_version, py_version, image_uri, env, ... are accepted and
    ignored: the script runs in the model server's Python, with its torch. nlpforge's addition: `jobs_root`,
    whose model server serves the endpoint (default $NLPFORGE_JOBS_ROOT or ./jobs)."""

    def __init__(self, model_data, entry_point: str | None = "inference.py", source_dir: str | None = None,
                 name: str | None = None, jobs_root: str | None = None, **sagemaker_settings):
        unknown = sorted(set(sagemaker_settings) - SAGEMAKER_MODEL_ARGUMENTS)
        if unknown:
            raise EndpointError(f"unknown PyTorchModel argument(s) {', '.join(unknown)}; see "
                                "help(nlpforge.sdk.PyTorchModel)")
        self.model_data = model_source(model_data)
        self.entry_point, self.source_dir = entry_point, source_dir
        if entry_point is not None:
            inference_script(entry_point, source_dir)  # checked now, packaged by deploy
        self.name, self.jobs_root = name, jobs_root
        self.settings = {k: repr(v) for k, v in sagemaker_settings.items()}

    def deploy(self, initial_instance_count: int = 1, instance_type: str = "local", serializer=None,
               deserializer=None, endpoint_name: str | None = None, **options):
        """Serve the model on this jobs root's model server (started if none of its own runs); returns a Predictor.
        `options` are SageMaker's other deploy arguments (accepted, ignored) or deploy_model's server settings."""
        from nlpforge.sdk.estimator import timestamped_name
        from nlpforge.sdk.predictor import deploy_model

        name = endpoint_name or self.name or timestamped_name("pytorch-inference")
        return deploy_model(self.model_data, name, initial_instance_count, instance_type=instance_type,
                            serializer=serializer, deserializer=deserializer, jobs_root=self.jobs_root,
                            entry_point=self.entry_point, source_dir=self.source_dir, **options)


def model_source(model_data) -> Path:
    """model_data as an existing local folder or .tar.gz."""
    text = str(model_data)
    if not text.strip():  # Path("") is the working folder, which would be packaged and served as the model
        raise EndpointError(f"model_data {model_data!r} is blank; give a model.tar.gz or a model folder")
    if text.startswith("s3://"):
        raise EndpointError(f"model_data {text} is an S3 URI; nlpforge runs locally: give the local model.tar.gz "
                            "or model folder (a job's is estimator.model_data)")
    path = Path(text.removeprefix("file://")).expanduser()
    if path.is_dir() or (path.is_file() and path.name.endswith((".tar.gz", ".tgz"))):
        return path.resolve()
    raise EndpointError(f"model_data {text}: {'nothing is there' if not path.exists() else 'not a .tar.gz'}; give "
                        "a model.tar.gz or a model folder")


def inference_script(entry_point: str, source_dir: str | None) -> Path:
    """The entry point's file: inside source_dir when one is given, else as a path."""
    for argument, value in (("entry_point", entry_point), ("source_dir", source_dir)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise EndpointError(f"{argument} must be a path given as a string, such as "
                                f"{'inference.py' if argument == 'entry_point' else 'code'!r}, not {value!r}")
    if source_dir is not None and not Path(source_dir).expanduser().is_dir():
        raise EndpointError(f"source_dir {source_dir} is not a folder; give the folder holding {entry_point}")
    script = (Path(source_dir).expanduser() / entry_point) if source_dir is not None else Path(entry_point).expanduser()
    if not script.is_file():
        where = f" in source_dir {source_dir}" if source_dir is not None else ""
        raise EndpointError(f"entry_point '{entry_point}' not found{where}; give the inference script that defines "
                            "model_fn (and input_fn, predict_fn, output_fn)")
    if script.suffix != ".py":
        raise EndpointError(f"entry_point '{entry_point}' must be a Python file (.py)")
    return script.resolve()


def package_model(model_data, entry_point: str, source_dir: str | None, destination: Path) -> Path:
    """SageMaker's repack, on disk: the model files at the top of `destination`, the inference code under code/, the
    entry point also as code/inference.py. Written beside it first, then moved in place."""
    source = model_source(model_data)
    script = inference_script(entry_point, source_dir)
    partial = destination.with_name(f".{destination.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_package(partial, source, script, source_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(destination, ignore_errors=True)
    partial.rename(destination)
    return destination


def write_package(partial: Path, source: Path, script: Path, source_dir: str | None) -> None:
    """Write the packaged folder at `partial`: the model files, then code/ (see package_model)."""
    if source.is_dir():
        shutil.copytree(source, partial, copy_function=link_or_copy)
    else:
        partial.mkdir()
        try:
            with tarfile.open(source, "r:gz") as tar:
                tar.extractall(partial, filter="data")  # refuses absolute paths and ../ escapes
        except (tarfile.TarError, OSError, EOFError, zlib.error) as error:  # EOFError, zlib.error: a cut archive
            raise EndpointError(f"model_data {source}: cannot extract ({str(error) or type(error).__name__}); give a "
                                "complete model.tar.gz (tar -czf model.tar.gz -C MODEL_DIR .)") from None
    code = partial / "code"
    shutil.rmtree(code, ignore_errors=True)  # SageMaker's repack replaces the archive's code too
    if source_dir is not None:
        shutil.copytree(Path(source_dir).expanduser(), code, ignore=CODE_IGNORED)
    else:
        code.mkdir()
    if source_dir is not None and script.is_relative_to(Path(source_dir).expanduser().resolve()):
        inside = script.relative_to(Path(source_dir).expanduser().resolve())
    else:  # the entry point alone, or one given by an absolute path outside source_dir
        shutil.copy2(script, code / script.name)
        inside = Path(script.name)
    if inside != Path("inference.py"):
        shutil.copy2(code / inside, code / "inference.py")


def link_or_copy(source, target) -> None:
    """A hard link where the file system allows one (a model's weights are large), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
