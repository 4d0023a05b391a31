#!/usr/bin/env bash
# Every GPU check in one run, written to one JSON file (bench/gpu.py says what is measured).
#
#   bench/gpu.sh --prepare     # here: training slices and MiniLM into .gpu/, the wheels the GPU image lacks into .whl/
#   bench/gpu.sh --dry-run     # here, on CPU: every step once, tiny (about a minute)
#   bench/gpu.sh               # on the GPU machine, with .gpu and .whl carried: under 8 minutes on one H100
#
# The GPU machine has no network and its own python3 with CUDA torch, transformers, tokenizers,
# safetensors, pyarrow and typer; what it lacks travels as wheels. Results go to $OUT/gpu.json when
# $OUT is set, else bench/results/gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 NLPFORGE_TRACKING=0 PYTHONUNBUFFERED=1
# MiniLM travels as a folder (.gpu/minilm-l6, weights in bf16): its 83 MB wheel is over the 64 MiB a call carries.
# The server's web stack is not in the GPU image either (its onnxruntime is the CPU build: the ONNX CUDA arm
# then records why it was skipped).
WHEELS="seqeval==1.2.2 sklearn-crfsuite==0.5.0 python-crfsuite==0.9.12 fastapi==0.165.0 starlette==1.10.0
        uvicorn==0.54.0 pydantic==2.14.4 pydantic-core==2.50.5 python-multipart==0.0.34 annotated-types==0.8.0
        typing-inspection==0.4.5 opentelemetry-api==1.45.2"

if [ "${1:-}" = "--prepare" ]; then
    .venv/bin/python bench/gpu.py --prepare .gpu
    mkdir -p .whl
    for wheel in $WHEELS; do
        .venv/bin/python -m pip download -q --no-deps --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform any -d .whl "$wheel"
    done
    ls -la .whl
    exit 0
fi

if [ "${1:-}" = "--dry-run" ]; then
    PY=.venv/bin/python
else
    PY=${PYTHON:-python3}
    if [ -d .whl ]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
DATA=()
[ -f .gpu/data/train.csv ] && DATA=(--data .gpu/data)
exec $PY bench/gpu.py "${DATA[@]}" --out "${OUT:-bench/results}/gpu.json" "$@"
