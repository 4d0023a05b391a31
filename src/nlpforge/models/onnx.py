"""The fast CPU path: export a model folder to ONNX, optionally quantize it to dynamic int8, run it
on ONNX Runtime. The task says how its torch model loads from the folder and which outputs to keep.

    outputs = {"logits": ("batch",)}      # each output's dynamic axes, from the first
    path = export_onnx("models/stars", task.load_weights, outputs)   # models/stars/onnx/model.onnx
    session = open_session("models/stars", task.load_weights, outputs, quantized=True, threads=2)

The exported files are a cache beside the weights (onnx/), rebuilt when model.safetensors is not the
file they were exported from (its size and time, kept in onnx/source.json), or when ONNX Runtime
cannot load them (a file cut short or emptied). A read-only model folder caches them under
~/.cache/nlpforge/onnx instead. Dynamic int8 keeps the
weights of every MatMul as int8 and quantizes activations per batch: no calibration data needed.
"""
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from nlpforge.errors import ArtifactError
from nlpforge.settings import cache_root, file_lock

log = logging.getLogger("nlpforge")
OPSET = 17


def _cache_folder(folder: Path) -> Path:
    target = folder / "onnx"
    try:
        target.mkdir(exist_ok=True)
        with tempfile.TemporaryFile(dir=target):  # a probe of its own: workers starting together probe at once
            pass
        return target
    except OSError:
        digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        target = cache_root() / "onnx" / digest
        target.mkdir(parents=True, exist_ok=True)
        return target


def _stamp(weights: Path) -> dict:
    """What tells one weights file from another without reading it: its size and modification time."""
    status = weights.stat()
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns}


def _exported_from(fp32: Path, weights: Path) -> bool:
    """Whether the cached export exists and was made from these weights (not merely newer than them)."""
    try:
        recorded = json.loads((fp32.parent / "source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return fp32.exists() and recorded == _stamp(weights)


def export_onnx(folder, load_weights, outputs: dict[str, tuple], quantized: bool = False,
                again: bool = False) -> Path:
    """The ONNX file of a model folder (fp32, or dynamic int8), exporting it if needed; `again` exports even
    when the cache looks current (it would not load)."""
    folder = Path(folder)
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise ArtifactError(f"{folder}: no model.safetensors to export; give an nlpforge model folder")
    cache = _cache_folder(folder)
    fp32 = cache / "model.onnx"
    exported = False
    if again or not _exported_from(fp32, weights):
        with file_lock(cache / ".export.lock"):  # workers starting together: one exports, the others then find its file
            if again or not _exported_from(fp32, weights):
                stamp = _stamp(weights)  # taken first: weights replaced during the export make the stamp stale
                (cache / "source.json").unlink(missing_ok=True)
                _export(folder, fp32, load_weights, outputs)
                (cache / "source.json").write_text(json.dumps(stamp), encoding="utf-8")
                exported = True
    if not quantized:
        return fp32
    int8 = cache / "model-int8.onnx"
    if exported or not int8.exists() or int8.stat().st_mtime_ns < fp32.stat().st_mtime_ns:
        from google.protobuf.message import DecodeError
        from onnx.checker import ValidationError
        from onnx.shape_inference import InferenceError

        try:
            _quantize(fp32, int8)
        except (DecodeError, ValidationError, InferenceError, ValueError):  # onnx's errors on a file cut short
            if exported:
                raise
            # The cached fp32 file is damaged (cut short, emptied): it is derived data, made again.
            log.warning("%s cannot be read; exporting %s again", fp32, folder)
            return export_onnx(folder, load_weights, outputs, quantized, again=True)
        log.info("quantized %s to dynamic int8", folder)
    return int8


def _quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = int8.with_suffix(f".partial-{os.getpid()}.onnx")
    try:
        quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, int8)


def _export(folder: Path, target: Path, load_weights, outputs: dict[str, tuple]) -> None:
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    from nlpforge.models.registry import check_loaded

    model, loading = load_weights(folder, attn_implementation="eager", output_loading_info=True)
    check_loaded(folder, loading)  # an edited config.json: the export would be of a partly random model
    model = model.eval()
    sample = tokenizer(["an example sentence", "another one"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Named(torch.nn.Module):
        """The model with its outputs as a tuple in `outputs` order (what the exporter traces)."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            result = self.model(**dict(zip(names, inputs)))
            return tuple(getattr(result, name) for name in outputs)

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes.update({name: dict(enumerate(dynamic)) for name, dynamic in outputs.items()})
    partial = target.with_suffix(f".partial-{os.getpid()}.onnx")
    with torch.inference_mode():
        # The TorchScript exporter: the dynamo one needs onnxscript and gives the same graph here.
        torch.onnx.export(Named().eval(), tuple(sample[n] for n in names), str(partial), input_names=names,
                          output_names=list(outputs), dynamic_axes=axes, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    os.replace(partial, target)
    log.info("exported %s to ONNX", folder)


def open_session(folder, load_weights, outputs: dict[str, tuple], quantized: bool = False,
                 threads: int = 1, device: str = "cpu"):
    """An ONNX Runtime session on `threads` intra-op threads and one inter-op thread (no oversubscription
    when several workers share the cores); on "cuda:N", CUDA's provider on that GPU."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device != "cpu":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ArtifactError(f"device {device}: this onnxruntime ({ort.__version__}) has no CUDA provider "
                                f"(it has {', '.join(ort.get_available_providers())}); install onnxruntime-gpu, "
                                "or serve with backend torch")
        providers = [("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)}), *providers]

    from onnxruntime.capi import onnxruntime_pybind11_state as state

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # yield cores when idle
    # What ONNX Runtime raises on a file that is not a whole model (cut short, emptied, overwritten).
    unreadable = (state.InvalidProtobuf, state.InvalidArgument, state.InvalidGraph, state.NoSuchFile, state.Fail)
    path = export_onnx(folder, load_weights, outputs, quantized)
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except unreadable as error:
        # The cache is derived data: export it again, once.
        log.warning("%s cannot be loaded (%s); exporting %s again", path, str(error).splitlines()[0], folder)
    path = export_onnx(folder, load_weights, outputs, quantized, again=True)
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except unreadable as error:
        raise ArtifactError(f"{path}: ONNX Runtime cannot load the model exported from {folder} "
                            f"({str(error).splitlines()[0]}); serve it with backend torch") from None
