#!/bin/bash
# Issue 24 on a one-GPU machine (16 cores, no network, its own torch 2.11.0+cu130 and nvcc
# 13.0: --env current), the whole pipeline in one hold: a partial vLLM 0.20.0 (_C +
# _C_stable_libtorch for 9.0a, longest edges first), made installable, then the model stage
# (tiny ModelOpt FP8 vs bf16 Llama, eager and default compile mode, kernel evidence).
#
# Carried (prepared on the CPU machine, never committed):
#   carry/      vm/ (the release sdist as in the tool's cache), cutlass.tgz, qutlass.tgz,
#               whl/ (setuptools-scm < 9): as gpu12.sh says          -- with MODE=start
#   .whl/core/  bash benchmarks/device/wheels_for_device.sh 0.20.0 core (84 wheels, 44.5 MiB)
#   .whl/xg/    xgrammar 0.2.3 + apache-tvm-ffi 0.1.9 (`from vllm import LLM` imports it)
# Each .whl group travels with a MODE=poll call of its own (64 MiB a command) and is
# installed into /tmp/site while the build runs (looked for in $R/.whl/ and $R/../whl/).
# The device receives the session's checkout, not a helper's worktree: issue 24's run copied
# this tree (src, benchmarks, patches; carry/ for the start only) into an ignored folder of
# that checkout, .gpu-carry/tree, and the wheels into .gpu-carry/whl/<group>, and named them
# in each call's carry (an ignored path not carried is removed there: carry the tree in
# every call, the running tool imports from it).
#   MODE=start OUT=dir bash benchmarks/device/model24.sh        # returns at once; the run goes on
#   MODE=poll WAIT=560 OUT=dir bash benchmarks/device/model24.sh  # back to back until rc=...
#
# A build compiled on the CPU machine instead (no compile in the hold: cold start + serve):
#   there: vllm-matrix export-build --matrix M --cell C --out D --strip-debug, then
#          tar -C D -cf - <dir> | xz -T0 | split -b 40m - .carry24/built.tar.xz.   (ignored;
#          the 0.20.0 9.0a build: 20.2 MiB, one part) and cp -r carry/vm .carry24/ (32 MiB)
#   MODE=part carrying .whl/core, then MODE=part carrying .whl/xg: wheels installed
#   BUILT=1 MODE=start carrying .carry24: joins the parts, then run --built DIR (the build
#          stage takes it; audit, smoke, gpu and model run here); then MODE=poll as below
set -x
cd "$(dirname "$0")/../.."
R=$PWD
export VLLM_MATRIX_CACHE=/tmp/vm PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH=$R/src:/tmp/site
W=/tmp/dws; mkdir -p $W /tmp/site; ln -sfn $R/patches $W/patches
install_wheels() {
  for g in $R/.whl/*/ $R/../whl/*/; do
    [ -d "$g" ] || continue
    n=$(basename $g); [ -f /tmp/site/.done-$n ] && continue
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site $g*.whl && touch /tmp/site/.done-$n; echo "installed wheels: $n"
  done
}
collect() {
  for f in $W/results/*.json; do [ -f "$f" ] && cp "$f" "$OUT/$(basename "$f" | tr "+" "_")"; done
  cp /tmp/run.out $OUT/run.out 2>/dev/null
  B=$(ls -d $VLLM_MATRIX_CACHE/builds/*/src/build/temp.* 2>/dev/null | head -1)
  L=$(ls -d $W/logs/* 2>/dev/null | head -1)
  mkdir -p /tmp/bundle
  [ -n "$B" ] && cp $B/.ninja_log $B/vllm-matrix-schedule.json /tmp/bundle/ 2>/dev/null
  [ -n "$L" ] && cp -r $L/model /tmp/bundle/ 2>/dev/null && rm -rf /tmp/bundle/model/tiny
  gzip -c $(ls $VLLM_MATRIX_CACHE/builds/*/build.log | head -1) > /tmp/bundle/build.log.gz 2>/dev/null
  tar -czf $OUT/bundle.tgz -C /tmp bundle 2>/dev/null; ls -la $OUT
}
stash_parts() {
  mkdir -p /tmp/parts
  for f in $R/.carry24/built.tar.xz.*; do [ -f "$f" ] && cp -n "$f" /tmp/parts/; done
  ls -la /tmp/parts
}
case ${MODE:-poll} in
part)
  stash_parts; install_wheels; exit 0 ;;
start)
  grep -q "def do_model" src/vllm_matrix/pipeline/plan.py || { echo "error: not the h-gpu tree"; exit 2; }
  nproc; free -g | head -2; uptime; ninja --version; which c++filt cuobjdump
  nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader
  rm -f /tmp/run.done
  mkdir -p $VLLM_MATRIX_CACHE
  if [ -n "$BUILT" ]; then  # the release sdist and the carried build: nothing compiles here
    cp -rn .carry24/vm/* $VLLM_MATRIX_CACHE/
    stash_parts; install_wheels; mkdir -p /tmp/built
    cat /tmp/parts/built.tar.xz.* | python3 -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall('/tmp/built')" || { echo "error: parts"; exit 2; }
    HOW="--built $(ls -d /tmp/built/vllm-*-partial-*)"; du -sh /tmp/built/*
  else
    cp -rn carry/vm/* $VLLM_MATRIX_CACHE/
    python3 -c "import setuptools_scm" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --target /tmp/site carry/whl/*.whl
    [ -d /tmp/cutlass ] || tar -xzf carry/cutlass.tgz -C /tmp
    [ -d /tmp/qutlass ] || tar -xzf carry/qutlass.tgz -C /tmp
    export VLLM_CUTLASS_SRC_DIR=/tmp/cutlass QUTLASS_SRC_DIR=/tmp/qutlass
    HOW="--targets _C,_C_stable_libtorch --no-probe --max-jobs 16 --nvcc-threads 1"
  fi
  cd $W && setsid nohup bash -c 't0=$(date +%s); "$@" > /tmp/run.out 2>&1; echo "rc=$? wall=$(( $(date +%s) - t0 ))s" > /tmp/run.done' \
    run python3 -m vllm_matrix run --env current --vllm 0.20.0 --arch 9.0a --depth model $HOW \
      < /dev/null > /dev/null 2>&1 &
  sleep 20; cat /tmp/run.out; exit 0 ;;
poll)
  install_wheels
  t0=$(date +%s)
  while [ ! -f /tmp/run.done ] && [ $(( $(date +%s) - t0 )) -lt ${WAIT:-0} ]; do sleep 5; done
  tail -8 /tmp/run.out; uptime
  collect
  [ -f /tmp/run.done ] && cat /tmp/run.done || echo "still running" ;;
esac
