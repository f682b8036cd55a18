#!/usr/bin/env bash
# One-command GPU run, in two halves (README "Training on a GPU").
#
#   tools/gpu_run.sh prepare [BUNDLE_DIR] [--python-version 3.12] [--data DIR]
#       here, with network: wheels the GPU machine lacks (keras, namex, optree, typing_extensions) for
#       CPython X.Y on manylinux x86_64 -> BUNDLE_DIR/wheels/, the preprocessed scans -> BUNDLE_DIR/covid-ct.npz.
#       Default BUNDLE_DIR: .gpu-bundle/ at the repo root (git-ignored).
#   tools/gpu_run.sh run BUNDLE_DIR OUT_DIR [--preset gpu] [--minutes 8] [--epochs N] [--n-eval 500]
#       on the GPU machine, without network: installs the wheels into a private prefix under /tmp, then
#       `python3 -m covgan_utils gpu-job` trains with KERAS_BACKEND=jax (override by setting it) and
#       leaves at most 8 small files in OUT_DIR.
#
# $PYTHON picks the interpreter (prepare: .venv/bin/python when present, else python3; run: python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Wheels the GPU machine does not have. keras 3.10.0 requires absl-py, numpy, rich, namex, h5py, optree,
# ml-dtypes, packaging; optree requires typing-extensions (present there only as a PyTorch dependency).
WHEELS=(keras==3.10.0 namex==0.1.0 optree==0.20.0 typing_extensions==4.16.0)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)

usage() {
    cat >&2 <<'EOF'
usage: tools/gpu_run.sh prepare [BUNDLE_DIR] [--python-version 3.12] [--data DIR]
       tools/gpu_run.sh run BUNDLE_DIR OUT_DIR [--preset gpu] [--minutes 8] [--epochs N] [--n-eval 500]
EOF
    [ $# -gt 0 ] && echo "error: $*" >&2
    exit 2
}

need_value() {  # need_value OPTION NUMBER_OF_REMAINING_ARGS
    [ "$2" -ge 2 ] || usage "$1 needs a value"
}

prepare() {
    local bundle="$REPO/.gpu-bundle" pyver="3.12" data=() positional=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --python-version) need_value "$1" $#; pyver="$2"; shift 2 ;;
            --data) need_value "$1" $#; data=(--data "$2"); shift 2 ;;
            -h|--help) usage ;;
            -*) usage "unknown option $1" ;;
            *) [ $positional -eq 0 ] || usage "unexpected argument $1"; bundle="$1"; positional=1; shift ;;
        esac
    done
    [[ "$pyver" =~ ^3\.[0-9]+$ ]] || usage "--python-version takes 3.X, got $pyver"
    local py="${PYTHON:-}"
    if [ -z "$py" ]; then
        if [ -x "$REPO/.venv/bin/python" ]; then py="$REPO/.venv/bin/python"; else py=python3; fi
    fi
    mkdir -p "$bundle"
    bundle="$(cd "$bundle" && pwd)"
    rm -rf "$bundle/wheels"
    local platform_args=()
    for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
    echo "wheels for CPython $pyver -> $bundle/wheels"
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
        "${platform_args[@]}" -d "$bundle/wheels" "${WHEELS[@]}"
    echo "data cache -> $bundle/covid-ct.npz"
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$py" -m covgan_utils data export-cache "$bundle/covid-ct.npz" "${data[@]}"
    ls -l "$bundle/wheels" "$bundle/covid-ct.npz"
    echo "bundle: $(du -sh "$bundle" | cut -f1) in $bundle"
}

run() {
    [ $# -ge 2 ] || usage "run needs BUNDLE_DIR and OUT_DIR"
    case "$1$2" in -*) usage "run needs BUNDLE_DIR and OUT_DIR before options" ;; esac
    local bundle="$1" out="$2" job=()
    shift 2
    while [ $# -gt 0 ]; do
        case "$1" in
            --preset|--minutes|--epochs|--n-eval|--run-dir) need_value "$1" $#; job+=("$1" "$2"); shift 2 ;;
            -h|--help) usage ;;
            *) usage "unknown argument $1" ;;
        esac
    done
    [ -f "$bundle/covid-ct.npz" ] || usage "no $bundle/covid-ct.npz: run 'tools/gpu_run.sh prepare' first"
    compgen -G "$bundle/wheels/*.whl" > /dev/null || usage "no wheels in $bundle/wheels: run 'tools/gpu_run.sh prepare' first"
    bundle="$(cd "$bundle" && pwd)"
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
    local py="${PYTHON:-python3}"
    local prefix
    prefix="$(mktemp -d /tmp/covgan-gpu-site.XXXXXX)"
    trap "rm -rf '$prefix'" EXIT
    if "$py" -m pip --version > /dev/null 2>&1; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$prefix" "$bundle"/wheels/*.whl
    else  # no pip: a wheel is a zip laid out for site-packages
        for whl in "$bundle"/wheels/*.whl; do "$py" -m zipfile -e "$whl" "$prefix"; done
    fi
    export KERAS_BACKEND="${KERAS_BACKEND:-jax}"
    export PYTHONPATH="$prefix:$REPO${PYTHONPATH:+:$PYTHONPATH}"
    export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
    echo "KERAS_BACKEND=$KERAS_BACKEND, $("$py" --version), wheels in $prefix"
    "$py" -m covgan_utils gpu-job --data "$bundle/covid-ct.npz" --out "$out" "${job[@]}"
}

[ $# -ge 1 ] || usage
command="$1"
shift
case "$command" in
    prepare) prepare "$@" ;;
    run) run "$@" ;;
    -h|--help) usage ;;
    *) usage "unknown command $command (prepare or run)" ;;
esac
