#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and real weights: install the heavy engines' environments for CUDA,
# then report what `parla engines` and `parla bench engines` measure there (load time, first audio,
# real-time factor, RSS and GPU memory). Reaches no network besides pip's package index.
#
# Usage: scripts/gpu-check.sh [-r ROUNDS] [ENGINE ...]
#   ENGINE  heavy engines to install and measure (xtts, f5, kokoro, dia, chatterbox, qwen3, higgs);
#           default: every catalogued engine whose weights are present under PARLA_MODELS_DIR
#           (default <data_dir>/models) or the Hugging Face cache.
#   -r N    rounds per engine (default 3); piper and mock are measured too, for comparison.
# Environment: PARLA_MODELS_DIR, PARLA_DATA_DIR, PARLA_ENGINES_DIR as for `parla serve`;
#   PARLA (default: .venv/bin/parla of this checkout).
set -euo pipefail

usage() { sed -n '6,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
rounds=3
while getopts "r:h" opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
case $rounds in '' | *[!0-9]* | 0) echo "error: -r takes a positive number, not '$rounds'" >&2; usage ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
parla=${PARLA:-$root/.venv/bin/parla}
python=$(dirname "$parla")/python
[ -x "$parla" ] || { echo "error: no parla at $parla (make install, or set PARLA)" >&2; exit 2; }

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "error: nvidia-smi not found: this check is for a machine with an NVIDIA GPU" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || {
  echo "error: nvidia-smi sees no GPU" >&2
  exit 1
}

if [ $# -gt 0 ]; then
  engines=("$@")
else
  # The catalogued engines whose weights Parla finds, asked of Parla itself (the same search `parla engines` does).
  mapfile -t engines < <("$python" - <<'PY'
from parla.engines.catalog import CATALOG
from parla.engines.weights import find_weights
from parla.settings import Settings

settings = Settings()
for name, entry in sorted(CATALOG.items()):
    found = find_weights(
        name, entry.weights, models_dir=settings.resolved_models_dir, reference_dir=settings.engine_weights_dir(name)
    )
    if found.complete:
        print(name)
PY
  )
fi
if [ ${#engines[@]} -eq 0 ]; then
  echo "error: no heavy engine's weights found (see README, 'Weights, never downloaded'); name engines to install anyway" >&2
  exit 1
fi
echo "engines: ${engines[*]}"

export PARLA_DEVICE=cuda
failed=()
for name in "${engines[@]}"; do
  "$parla" engines install "$name" --device cuda || failed+=("$name")
done

"$parla" engines
bench_args=(--rounds "$rounds" --engine piper --engine mock)
for name in "${engines[@]}"; do bench_args+=(--engine "$name"); done
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$parla" bench engines "${bench_args[@]}" | tee "$out"

echo
echo "summary: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), ${#engines[@]} heavy engine(s), $rounds round(s)"
[ ${#failed[@]} -eq 0 ] || echo "  install failed: ${failed[*]} (logs under <data_dir>/logs/engine-<name>-install.log)"
for name in "${engines[@]}"; do
  row=$(grep -E "^│ $name +│" "$out" || true)
  if [ -z "$row" ]; then
    echo "  $name: not in the table"
  else
    echo "  $row"
  fi
done
