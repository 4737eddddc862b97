#!/bin/bash
# Issue 13 on the 8-GPU machine (128 cores, no network, its own torch 2.11.0+cu130 and
# nvcc 13.0: --env current): a full vLLM 0.20.0 wheel for 9.0a, then the model stage --
# vllm.LLM(model=<tiny FP8 dir>, quantization="modelopt") against the bf16 model.
# One machine hold (30 min), commands of at most 10 min: the build runs in a session of its
# own (setsid) and outlives the command that started it; the wheel (hundreds of MB) never
# leaves the machine, so install and model stage run in the same hold.
#
# Carried (prepared on the CPU machine, never committed; docs/gpu-runs.md says how):
#   carry/          the release sdist and its FetchContent sources, as issue 12's gpu12.sh
#   .whl/core/      bash benchmarks/device/wheels_for_device.sh 0.20.0 core   (84 wheels, 44.5 MiB)
# Run there, one call each:
#   MODE=start OUT=dir bash benchmarks/device/model13.sh   # returns at once; the build goes on
#   MODE=poll  OUT=dir bash benchmarks/device/model13.sh   # short calls until it says rc=...
#   MODE=model OUT=dir bash benchmarks/device/model13.sh   # carry .whl/core: install, tiny model, stage
set -x
cd "$(dirname "$0")/../.."
R=$PWD
export PYTHONPATH=$R/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export VLLM_MATRIX_CACHE=/tmp/vm
W=/tmp/dws; mkdir -p $W $OUT; ln -sfn $R/patches $W/patches
VLLM=${VLLM:-0.20.0}
case ${MODE:-model} in
start)
  [ -d $R/carry/vm ] && mkdir -p $VLLM_MATRIX_CACHE && cp -rn $R/carry/vm/* $VLLM_MATRIX_CACHE/
  nproc; free -g | head -2; ldd --version | head -1; nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader
  rm -f /tmp/build.done
  cd $W && setsid nohup bash -c 't0=$(date +%s); /usr/bin/time -v -o /tmp/build.time "$@" > /tmp/build.out 2>&1; echo "rc=$? wall=$(( $(date +%s) - t0 ))s" > /tmp/build.done' \
    run python3 -m vllm_matrix run --env current --vllm $VLLM --arch 9.0a --depth build \
      --max-jobs ${JOBS:-120} < /dev/null > /dev/null 2>&1 &
  sleep 5; cat /tmp/build.out; exit 0 ;;
poll)
  tail -5 /tmp/build.out; cp /tmp/build.out /tmp/build.time $OUT/ 2>/dev/null
  [ -f /tmp/build.done ] || { echo "still running"; uptime; exit 0; }
  cat /tmp/build.done; cp $W/results/*.json $OUT/ 2>/dev/null; ls -la $W/dist ;;
model)
  whl=$(ls $W/dist/vllm-*.whl 2>/dev/null | head -1)
  [ -n "$whl" ] || { echo "error: no vLLM wheel in $W/dist: MODE=start first"; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$whl" $R/.whl/core/*.whl || exit 1
  export PYTHONPATH=$PYTHONPATH:/tmp/site
  python3 -c "import vllm, sys; print('vllm', vllm.__version__, vllm.__file__)" || exit 1
  python3 -m vllm_matrix tiny-model --out /tmp/tiny --compare > $OUT/tiny-model.json || exit 1
  t0=$(date +%s)
  python3 -m vllm_matrix model --dir /tmp/tiny --work /tmp/model --json > $OUT/model-stage.json
  echo "model stage rc=$? wall=$(( $(date +%s) - t0 ))s"
  cp /tmp/model/*.json $OUT/ 2>/dev/null; tail -c 20000 /tmp/model/model.log > $OUT/model.log
  head -c 3000 $OUT/model-stage.json ;;
esac
