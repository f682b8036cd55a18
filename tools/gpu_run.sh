#!/usr/bin/env bash
# One-command GPU run, in two halves (README "Training on a GPU").
#
#   tools/gpu_run.sh prepare [BUNDLE_DIR] [--python-version 3.12] [--data DIR]
#       here, with network: wheels the GPU machine lacks (keras, namex, optree, typing_extensions) for
#       CPython X.Y on manylinux x86_64 -> BUNDLE_DIR/wheels/, the preprocessed scans -> BUNDLE_DIR/covid-ct.npz.
#       Default BUNDLE_DIR: .gpu-bundle/ at the repo root (git-ignored).
#   tools/gpu_run.sh run BUNDLE_DIR OUT_DIR [--preset gpu] [--minutes 8] [--epochs N] [--n-eval 500] [--devices all]
#       on the GPU machine, without network: installs the wheels into a private prefix under /tmp, then
#       `python3 -m covgan_utils gpu-job` trains with KERAS_BACKEND=jax (override by setting it) on every
#       visible GPU (data-parallel; --devices N for fewer) and leaves at most 8 small files in OUT_DIR.
#   tools/gpu_run.sh ablation BUNDLE_DIR OUT_DIR --minutes M [--seeds 0 [1 ...]] [--rows ROW [ROW ...]]
#       on the GPU machine: every families-ablation ROW (default: all) trains at once, each its own process
#       on the one GPU (`ablation run --study families`), for M minutes of wall time per seed; then the
#       finished cells are slimmed to their float16 generators (`ablation slim`) and the run folders come
#       back as OUT_DIR/ablation.tar.gz.part-NN (15 MB pieces: `cat ablation.tar.gz.part-* | tar -xz`).
#   tools/gpu_run.sh paper BUNDLE_DIR OUT_DIR [--minutes 8] [--runs RUN [RUN ...]] [--n-samples 500] [--grid-every 10] [--epochs N]
#       on the GPU machine: the paper's own model (preset `paper`, float32) in each variant RUN ("1:1", "2:1",
#       "1:1 paper-code"; default 1:1 and "1:1 paper-code"), one after the other, sharing the minutes
#       (`paper-job`); OUT_DIR gets one tar per run (samples, per-epoch logs, grids, interpolation) and job.json.
#   tools/gpu_run.sh select BUNDLE_DIR OUT_DIR --minutes M [--stage1-minutes S] [--candidates NAME ...] [--n-samples 500] [--root DIR] [--continue]
#       on the GPU machine: the two-stage selection (`select run`): every candidate at once for S minutes (the
#       guard watching only), the leader by the fixed rule on domain features, then the leader alone for the
#       rest of the M minutes; OUT_DIR gets selection.json, job.json, the leader's generator and
#       selection.tar.gz.part-NN. --continue (`select continue`), in a call made at once on the same machine,
#       gives the leader M more minutes; score either here with `python -m covgan_utils select score OUT_DIR`.
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
       tools/gpu_run.sh run BUNDLE_DIR OUT_DIR [--preset gpu] [--minutes 8] [--epochs N] [--n-eval 500] [--devices all]
       tools/gpu_run.sh ablation BUNDLE_DIR OUT_DIR --minutes M [--seeds 0 [1 ...]] [--rows ROW [ROW ...]]
       tools/gpu_run.sh paper BUNDLE_DIR OUT_DIR [--minutes 8] [--runs RUN [RUN ...]] [--n-samples 500] [--grid-every 10] [--epochs N]
       tools/gpu_run.sh select BUNDLE_DIR OUT_DIR --minutes M [--stage1-minutes S] [--stage2-minutes T]
                                [--candidates NAME ...] [--n-samples 500] [--root DIR] [--reserve-minutes 1] [--continue]
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
    local bundle="$1" out="$2" job=() devices=(--devices all) py
    shift 2
    while [ $# -gt 0 ]; do
        case "$1" in
            --preset|--minutes|--epochs|--n-eval|--run-dir) need_value "$1" $#; job+=("$1" "$2"); shift 2 ;;
            --devices) need_value "$1" $#; devices=(--devices "$2"); shift 2 ;;
            -h|--help) usage ;;
            *) usage "unknown argument $1" ;;
        esac
    done
    setup_bundle "$bundle" "$out"
    "$py" -m covgan_utils gpu-job --data "$bundle/covid-ct.npz" --out "$out" "${devices[@]}" "${job[@]}"
}

# setup_bundle BUNDLE_DIR OUT_DIR: checks the bundle, installs its wheels into a private prefix removed on
# exit, exports the environment; sets bundle, out (absolute) and py.
setup_bundle() {
    bundle="$1" out="$2"
    [ -f "$bundle/covid-ct.npz" ] || usage "no $bundle/covid-ct.npz: run 'tools/gpu_run.sh prepare' first"
    compgen -G "$bundle/wheels/*.whl" > /dev/null || usage "no wheels in $bundle/wheels: run 'tools/gpu_run.sh prepare' first"
    bundle="$(cd "$bundle" && pwd)"
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
    py="${PYTHON:-python3}"
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
}

paper() {
    [ $# -ge 2 ] || usage "paper needs BUNDLE_DIR and OUT_DIR"
    case "$1$2" in -*) usage "paper needs BUNDLE_DIR and OUT_DIR before options" ;; esac
    local bundle="$1" out="$2" job=() runs=() in_runs=0 py
    shift 2
    while [ $# -gt 0 ]; do
        case "$1" in
            --minutes|--n-samples|--grid-every|--epochs|--preset|--work-dir) need_value "$1" $#; job+=("$1" "$2"); in_runs=0; shift 2 ;;
            --runs) in_runs=1; shift ;;
            -h|--help) usage ;;
            -*) usage "unknown option $1" ;;
            *) [ $in_runs -eq 1 ] || usage "unexpected argument $1"; runs+=("$1"); shift ;;
        esac
    done
    [ $in_runs -eq 0 ] || [ ${#runs[@]} -gt 0 ] || usage "--runs needs at least one RUN"
    [ ${#runs[@]} -eq 0 ] || job+=(--runs "${runs[@]}")
    setup_bundle "$bundle" "$out"
    "$py" -m covgan_utils paper-job --data "$bundle/covid-ct.npz" --out "$out" "${job[@]}"
}

selection() {  # `select` is a bash keyword
    [ $# -ge 2 ] || usage "select needs BUNDLE_DIR and OUT_DIR"
    case "$1$2" in -*) usage "select needs BUNDLE_DIR and OUT_DIR before options" ;; esac
    local bundle="$1" out="$2" job=() candidates=() in_list=0 action=run minutes="" first_call_only="" py
    shift 2
    while [ $# -gt 0 ]; do
        case "$1" in
            --minutes) need_value "$1" $#; minutes="$2"; job+=("$1" "$2"); in_list=0; shift 2 ;;
            --stage1-minutes|--stage2-minutes|--n-samples) need_value "$1" $#; first_call_only="$1"; job+=("$1" "$2"); in_list=0; shift 2 ;;
            --root|--reserve-minutes) need_value "$1" $#; job+=("$1" "$2"); in_list=0; shift 2 ;;
            --candidates) first_call_only="$1"; in_list=1; shift ;;
            --continue) action=continue; in_list=0; shift ;;
            -h|--help) usage ;;
            -*) usage "unknown option $1" ;;
            *) [ $in_list -eq 1 ] || usage "unexpected argument $1"; candidates+=("$1"); shift ;;
        esac
    done
    [ -n "$minutes" ] || usage "select needs --minutes"
    [ "$action" = run ] || [ -z "$first_call_only" ] || usage "$first_call_only belongs to the first call, not to --continue"
    [ $in_list -eq 0 ] || [ ${#candidates[@]} -gt 0 ] || usage "--candidates needs at least one NAME"
    [ ${#candidates[@]} -eq 0 ] || job+=(--candidates "${candidates[@]}")
    setup_bundle "$bundle" "$out"
    export XLA_PYTHON_CLIENT_PREALLOCATE=false  # stage 1: every candidate's process shares the one GPU
    "$py" -m covgan_utils select "$action" --data "$bundle/covid-ct.npz" --out "$out" "${job[@]}"
}

ablation() {
    [ $# -ge 2 ] || usage "ablation needs BUNDLE_DIR and OUT_DIR"
    case "$1$2" in -*) usage "ablation needs BUNDLE_DIR and OUT_DIR before options" ;; esac
    local bundle="$1" out="$2" minutes="" seeds=() rows=() list=""
    shift 2
    while [ $# -gt 0 ]; do
        case "$1" in
            --minutes) need_value "$1" $#; minutes="$2"; list=""; shift 2 ;;
            --seeds) list=seeds; shift ;;
            --rows) list=rows; shift ;;
            -h|--help) usage ;;
            -*) usage "unknown option $1" ;;
            *) case "$list" in
                   seeds) [[ "$1" =~ ^[0-9]+$ ]] || usage "--seeds takes integers, got $1"; seeds+=("$1") ;;
                   rows) rows+=("$1") ;;
                   *) usage "unexpected argument $1" ;;
               esac
               shift ;;
        esac
    done
    [ -n "$minutes" ] || usage "ablation needs --minutes"
    [ ${#seeds[@]} -gt 0 ] || seeds=(0)
    local py
    setup_bundle "$bundle" "$out"
    [ -z "$(ls -A "$out")" ] || usage "$out is not empty; choose a new OUT_DIR"
    if [ ${#rows[@]} -eq 0 ]; then
        mapfile -t rows < <("$py" -c 'from covgan_utils.studies import ablation; print("\n".join(ablation.FAMILIES))')
    fi
    "$py" - "${rows[@]}" <<'PY' || exit 2
import sys
from covgan_utils.studies import ablation
unknown = [r for r in sys.argv[1:] if r not in ablation.FAMILIES]
sys.exit(f"error: unknown families row(s) {unknown}; choose from {list(ablation.FAMILIES)}" if unknown else 0)
PY
    export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several processes share the one GPU
    local root pids=() failed=0 i
    root="$(mktemp -d /tmp/covgan-ablation.XXXXXX)"
    echo "${#rows[@]} rows x seeds ${seeds[*]}, $minutes min each, at once -> $root"
    for i in "${!rows[@]}"; do
        "$py" -m covgan_utils ablation run --study families --rows "${rows[$i]}" --seeds "${seeds[@]}" --minutes "$minutes" \
            --root "$root" --data "$bundle/covid-ct.npz" > "$root/row-$i.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { failed=1; echo "row ${rows[$i]} failed:"; tail -n 5 "$root/row-$i.log"; }
    done
    "$py" -m covgan_utils ablation slim --root "$root"
    tar -C "$root" -czf - . | split -b 15m -d - "$out/ablation.tar.gz.part-"
    ls -l "$out"
    return $failed
}

[ $# -ge 1 ] || usage
command="$1"
shift
case "$command" in
    prepare) prepare "$@" ;;
    run) run "$@" ;;
    ablation) ablation "$@" ;;
    paper) paper "$@" ;;
    select) selection "$@" ;;
    -h|--help) usage ;;
    *) usage "unknown command $command (prepare, run, ablation, paper or select)" ;;
esac
