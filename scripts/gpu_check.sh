#!/usr/bin/env bash
# The prepared GPU check: every CUDA path of spell-rl in a few minutes, on one GPU with no internet and no vLLM.
#
#   scripts/gpu_check.sh --prepare   here (package index reachable): wheels the GPU image lacks -> .gpu_wheels/
#   scripts/gpu_check.sh --dry-run   any machine, no GPU needed: checks this script's own set-up and prints the plan
#   scripts/gpu_check.sh             the GPU machine: CUDA tests + two `spell train` runs on CUDA, one summary line
#
# On the GPU machine the project is not installed: it runs from this checkout (PYTHONPATH) with the machine's own
# torch, transformers and peft; what the image lacks (omegaconf) comes from .gpu_wheels/, installed with
# --no-index into a temporary folder. .gpu_wheels/ is git-ignored: carry it along with the checkout.
# What runs (README "GPU check"): pytest tests/gpu -m gpu (HF engine on CUDA, a bf16-autocast step with fp32 master
# weights, exact resume, a one-rank nccl step, FSDP2 bf16 mixed precision, LoRA on CUDA, one builtin step; the vLLM
# cases skip without vLLM), then `spell train` through the command line on CUDA for 2 steps, full and LoRA.
# Exit status: 0 when everything passed, 1 when something failed, 2 for a bad argument.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=run
case "${1:-}" in
  "") ;;
  --dry-run) MODE=dry ;;
  --prepare) MODE=prepare ;;
  *) echo "usage: scripts/gpu_check.sh [--dry-run | --prepare]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
WHEELS=.gpu_wheels
WANTED=("omegaconf==2.4.0")  # pure-Python packages the GPU image lacks (its packages: torch, transformers, peft, ...)
SUMMARY=()
FAILED=0

if [ "$MODE" = prepare ]; then
  mkdir -p "$WHEELS"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$WHEELS" "${WANTED[@]}" || exit 1
  echo "gpu_check: wheels in $WHEELS: $(ls "$WHEELS" | tr '\n' ' ')"
  exit 0
fi

note() { SUMMARY+=("$1"); echo "gpu_check: $1" >&2; }
fail() { FAILED=1; note "$1"; }

# 1. the set-up: this checkout importable, with the wheels the image lacks
SITE=$(mktemp -d /tmp/spell_gpu_check.XXXXXX)
trap 'rm -rf "$SITE"' EXIT
if ! "$PY" -c "import omegaconf" 2>/dev/null; then
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE/site" "$WHEELS"/*.whl || fail "wheels: install failed"
  else
    fail "omegaconf missing and no $WHEELS/*.whl: run scripts/gpu_check.sh --prepare where pip reaches the index"
  fi
fi
export PYTHONPATH="$SITE/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
DEVICE=$("$PY" -c "import spell, torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')" 2>&1 | tail -1)
VERSIONS=$("$PY" -c "import torch, transformers, peft; print(f'torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}')" 2>&1 | tail -1)
note "device: $DEVICE; $VERSIONS"
if [ "$MODE" = run ] && [ "$DEVICE" = none ]; then
  fail "no CUDA GPU: nothing to check (use --dry-run on a CPU machine)"
  echo "gpu_check: run FAILED$(printf ' | %s' "${SUMMARY[@]}")"; exit 1
fi

# 2. the CUDA tests (--dry-run: collected only; without a GPU every module skips at import)
if [ "$MODE" = dry ]; then
  OUT=$(timeout 300 "$PY" -m pytest tests/gpu -m gpu -q -p no:cacheprovider -o addopts= --collect-only 2>&1)
else
  OUT=$(timeout 420 "$PY" -m pytest tests/gpu -m gpu -q -p no:cacheprovider -o addopts= 2>&1)
fi
STATUS=$?
echo "$OUT" | tail -15 >&2
LAST=$(echo "$OUT" | grep -E "passed|failed|skipped|error|no tests ran|collected|selected" | tail -1)
if [ $STATUS -ne 0 ] && ! { [ "$MODE" = dry ] && [ $STATUS -eq 5 ]; }; then  # 5: nothing collected (no GPU)
  fail "pytest tests/gpu exited $STATUS"
fi
note "pytest tests/gpu: ${LAST:-no result line}"

# 3. `spell train` on CUDA through the command line: 2 steps, full fine-tune and LoRA, on a tiny policy built here
WORK="$SITE/work"
"$PY" - "$WORK" <<'PYEOF' || fail "tiny policy / corpus: could not be built"
import json, sys
from pathlib import Path
from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer, save_policy
work = Path(sys.argv[1]); work.mkdir(parents=True)
facts = {f"set-{i}": [f"Document {i}: the river Alder{i} flows {10 + i} km north.", f"Brenn{i} lies on it."]
         for i in range(6)}
tokenizer = build_tiny_tokenizer([d for docs in facts.values() for d in docs] * 4, vocab_size=400)
save_policy(build_tiny_model(tokenizer, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1), tokenizer,
            work / "policy")
(work / "corpus.jsonl").write_text("".join(json.dumps({"id": k, "documents": v, "task": "doc_general_qa"}) + "\n"
                                           for k, v in facts.items()))
PYEOF
ARGS=(--config tiny_cpu "model.path=$WORK/policy" "data.train_files=[$WORK/corpus.jsonl]" "data.tasks=[doc_general_qa]"
      "verifier.tasks=[doc_general_qa]" train.device=cuda train.max_steps=2 "eval.heldout_files=[]")
for VARIANT in full lora; do
  EXTRA=()
  [ "$VARIANT" = lora ] && EXTRA=(model.lora_rank=4 model.lora_alpha=8)
  START=$(date +%s)
  if [ "$MODE" = dry ]; then  # the same command, checked without a model (no GPU needed)
    timeout 120 "$PY" -m spell.cli validate "${ARGS[@]}" "output_dir=$WORK/run_$VARIANT" "${EXTRA[@]}" >/dev/null 2>&1 \
      && note "spell train $VARIANT: command valid" || fail "spell train $VARIANT: spell validate refused the command"
  else
    timeout 240 "$PY" -m spell.cli train "${ARGS[@]}" "output_dir=$WORK/run_$VARIANT" "${EXTRA[@]}" >&2 \
      && [ "$(wc -l < "$WORK/run_$VARIANT/metrics.jsonl")" -eq 2 ] \
      && note "spell train $VARIANT: 2 steps in $(( $(date +%s) - START )) s" || fail "spell train $VARIANT: failed"
  fi
done

[ "$MODE" = dry ] && WHAT="dry-run" || WHAT="run"
[ $FAILED -eq 0 ] && VERDICT=ok || VERDICT=FAILED
JOINED=$(printf ' | %s' "${SUMMARY[@]}")
echo "gpu_check: $WHAT $VERDICT$JOINED"
exit $FAILED
