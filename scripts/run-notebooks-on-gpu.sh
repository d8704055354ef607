#!/usr/bin/env bash
# Run every notebook under nbval on a CUDA machine (TU_DEVICE=cuda) and print per-notebook times.
#
#   bash scripts/run-notebooks-on-gpu.sh            # uses .venv if present, else python3
#   PYTHON=python bash scripts/run-notebooks-on-gpu.sh
#
# Fails fast when no CUDA device is visible, so a "GPU run" never silently runs on the CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export TU_DEVICE=${TU_DEVICE:-cuda} TU_PROGRESS=0
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible: run this on a GPU machine')"
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
results=()
status=0
for nb in book/[0-9]*.ipynb; do
  start=$(date +%s.%N)
  if "$PY" -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env "$nb" >"/tmp/nbval-$(basename "$nb").log" 2>&1; then
    result=pass
  else
    result=FAIL; status=1
  fi
  end=$(date +%s.%N)
  results+=("$(printf '%-32s %8.1f s  %s' "$(basename "$nb")" "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" "$result")")
done
printf '\n%-32s %10s  %s\n' notebook time result
printf '%s\n' "${results[@]}"
[ $status -eq 0 ] || echo "logs of failures: /tmp/nbval-*.log"
exit $status
