"""The fast CPU path: export a model folder to ONNX, optionally quantize it to dynamic int8, run it
on ONNX Runtime. The task says how its torch model loads from the folder and which outputs to keep.

    outputs = {"logits": ("batch",)}      # each output's dynamic axes, from the first
    path = export_onnx("models/stars", task.load_weights, outputs)   # models/stars/onnx/model.onnx
    session = open_session("models/stars", task.load_weights, outputs, quantized=True, threads=2)

The exported files are a cache beside the weights, rebuilt when model.safetensors is newer. A
read-only model folder caches them under ~/.cache/nlpforge/onnx instead. Dynamic int8 keeps the
weights of every MatMul as int8 and quantizes activations per batch: no calibration data needed.
"""
import hashlib
import logging
import os
from pathlib import Path

from nlpforge.errors import ArtifactError

from nlpforge.settings import cache_root

log = logging.getLogger("nlpforge")
OPSET = 17


def _cache_folder(folder: Path) -> Path:
    target = folder / "onnx"
    try:
        target.mkdir(exist_ok=True)
        probe = target / ".write-test"
        probe.touch()
        probe.unlink()
        return target
    except OSError:
        digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        target = cache_root() / "onnx" / digest
        target.mkdir(parents=True, exist_ok=True)
        return target


def _fresh(path: Path, source: Path) -> bool:
    return path.exists() and path.stat().st_mtime >= source.stat().st_mtime


def export_onnx(folder, load_weights, outputs: dict[str, tuple], quantized: bool = False) -> Path:
    """The ONNX file of a model folder (fp32, or dynamic int8), exporting it if needed."""
    folder = Path(folder)
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise ArtifactError(f"{folder}: no model.safetensors to export; give an nlpforge model folder")
    cache = _cache_folder(folder)
    fp32 = cache / "model.onnx"
    if not _fresh(fp32, weights):
        _export(folder, fp32, load_weights, outputs)
    if not quantized:
        return fp32
    int8 = cache / "model-int8.onnx"
    if not _fresh(int8, fp32):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        partial = int8.with_suffix(f".partial-{os.getpid()}.onnx")
        quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8)
        os.replace(partial, int8)
        log.info("quantized %s to dynamic int8", folder)
    return int8


def _export(folder: Path, target: Path, load_weights, outputs: dict[str, tuple]) -> None:
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = load_weights(folder, attn_implementation="eager").eval()
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

    path = export_onnx(folder, load_weights, outputs, quantized)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # yield cores when idle
    return ort.InferenceSession(str(path), options, providers=providers)
