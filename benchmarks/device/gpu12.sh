#!/bin/bash
# Issue 12 on the GPU machine (no network, its own torch and nvcc: --env current):
# a partial build of vLLM's FP8 targets for 9.0a and 12.0a with the tool, its audit, and
# the gpu stage on the machine's GPU; then measurements for a full wheel's projection
# (a timed slice of the targets not built) and real cuobjdump output for the audit's tests.
#
# Carried under carry/ (prepared on the CPU machine, never committed):
#   vm/pins/vllm-V.json + vm/blobs/sha256/..  the release sdist, as in the tool's cache
#   cutlass.tgz   CUTLASS at the tag vLLM pins (git export less docs/, test/, media/ and
#                 examples/ but examples/common and examples/77_blackwell_fmha, which _C's
#                 sm100 MLA kernel includes for 12.0a): vLLM's CMake runs CUTLASS's
#                 CMakeLists and its python/ generator
#   whl/          setuptools-scm < 9 (vLLM's setup.py imports it; the image lacks it; 10.x
#                 needs vcs-versioning, which needs a newer packaging than the image's)
#   qutlass.tgz   qutlass at its pin (qutlass/ only): compiled into _C for 12.x
# Run there:  TARGETS=_C_stable_libtorch ARCHS="9.0a;12.0a" JOBS=32 LIMIT=420 SLICE=_C:90 \
#             OUT=dir bash benchmarks/device/gpu12.sh
# or, for a build longer than one command: MODE=start ... (returns at once), then
# MODE=poll WAIT=540 ... at once after each other until it says rc=...: the gpu stage ran.
# NOFX=1: skip the plain sm_90 recompile (the audit's fixtures, already in tests/unit/device).
set -x
cd "$(dirname "$0")/../.."
R=$PWD
C=$R/carry
export VLLM_MATRIX_CACHE=/tmp/vm
mkdir -p $VLLM_MATRIX_CACHE && cp -rn $C/vm/* $VLLM_MATRIX_CACHE/
export PYTHONPATH=$R/src PYTHONUNBUFFERED=1
# vLLM's setup.py imports setuptools_scm, which the image lacks: carried as a wheel.
python3 -c "import setuptools_scm" 2>/dev/null || {
  python3 -m pip install -q --no-index --no-deps --target /tmp/site $C/whl/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/site; }
python3 -c "import setuptools, setuptools_scm, jinja2, cmake, ninja; print('setuptools', setuptools.__version__)"
nproc; free -g | head -2; uptime
{ nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader
  echo ---; nvidia-smi; } > $OUT/nvidia-smi.txt 2>&1
[ -d /tmp/cutlass ] || tar -xzf $C/cutlass.tgz -C /tmp
[ -d /tmp/qutlass ] || tar -xzf $C/qutlass.tgz -C /tmp
export VLLM_CUTLASS_SRC_DIR=/tmp/cutlass QUTLASS_SRC_DIR=/tmp/qutlass
W=/tmp/dws; mkdir -p $W; ln -sfn $R/patches $W/patches
cd $W
python3 -m vllm_matrix doctor --env current --json > $OUT/doctor.json 2>&1; echo "doctor rc=$?"
python3 -m vllm_matrix doctor --env current --arch auto 2>&1 | tail -12
RUN=(python3 -m vllm_matrix run --env current --vllm 0.20.0 --arch "${ARCHS:-9.0a;12.0a}"
  --depth gpu --targets "${TARGETS:-_C_stable_libtorch}" --no-probe --max-jobs ${JOBS:-32}
  --nvcc-threads 1)
# MODE=start: the run in a session of its own (it outlives this command, until the machine
# goes back: an interrupted nvcc unit restarts from zero, and vLLM 0.20.0's longest
# _C_stable_libtorch unit takes > 290 s); MODE=poll: where it is, and its files when done.
# MODE=all (default): in the foreground under LIMIT seconds, then the measurements below.
case ${MODE:-all} in
start)
  rm -f /tmp/run.done
  setsid nohup bash -c 't0=$(date +%s); "$@" > /tmp/run.out 2>&1; echo "rc=$? wall=$(( $(date +%s) - t0 ))s" > /tmp/run.done' \
    run "${RUN[@]}" < /dev/null > /dev/null 2>&1 &
  sleep 5; cat /tmp/run.out; exit 0 ;;
poll)
  # WAIT=seconds: wait here for the run to end (the machine goes back when idle, so a poll
  # that waits inside the command keeps it held; the next poll must follow at once).
  t0=$(date +%s)
  while [ ! -f /tmp/run.done ] && [ $(( $(date +%s) - t0 )) -lt ${WAIT:-0} ]; do sleep 10; done
  tail -5 /tmp/run.out; cp /tmp/run.out $OUT/run.out
  if [ ! -f /tmp/run.done ]; then echo "still running"; exit 0; fi
  cat /tmp/run.done ;;
*)
  t0=$(date +%s)
  timeout -s INT ${LIMIT:-420} "${RUN[@]}" > $OUT/run.out 2>&1
  echo "tool run rc=$? wall=$(( $(date +%s) - t0 ))s"; tail -25 $OUT/run.out ;;
esac
for f in $W/results/*.json; do cp "$f" "$OUT/$(basename "$f" | tr "+" "_")"; done
B=$(ls -d $VLLM_MATRIX_CACHE/builds/*/src/build/temp.* | head -1)
# Real cuobjdump output for the audit's tests: the FP8 GEMM object as built (sm_90a), and
# the same unit compiled for plain sm_90 (its command from ninja, the gencode changed).
O=CMakeFiles/_C_stable_libtorch.dir/csrc/libtorch_stable/quantization/w8a8/cutlass/c3x/scaled_mm_sm90_fp8.cu.o
mkdir -p /tmp/fx; (
  cd $B && [ -f $O ] && [ -z "$NOFX" ] && [ ! -s /tmp/fx/sm90.list-elf.txt ] && {
    cuobjdump --list-elf $O > /tmp/fx/sm90a.list-elf.txt
    cuobjdump --dump-sass $O | grep -E 'code for sm_|Function :|MMA' | head -3000 > /tmp/fx/sm90a.sass-mma.txt
    cmd=$(ninja -t commands $O | tail -1 | sed "s/compute_90a/compute_90/g; s/sm_90a/sm_90/g")
    cmd=${cmd/-o $O/-o /tmp/fx/plain90.o}
    echo "$cmd" > /tmp/fx/plain90.cmd
    t1=$(date +%s); eval "timeout 150 $cmd" > /tmp/fx/plain90.log 2>&1; echo "plain sm_90 compile rc=$? $(( $(date +%s) - t1 ))s" >> /tmp/fx/plain90.log
    cuobjdump --list-elf /tmp/fx/plain90.o > /tmp/fx/sm90.list-elf.txt 2>&1
    cuobjdump --dump-sass /tmp/fx/plain90.o 2>&1 | grep -E 'code for sm_|Function :|MMA' | head -3000 > /tmp/fx/sm90.sass-mma.txt
  }
  for so in $VLLM_MATRIX_CACHE/builds/*/partial/vllm/*.so; do
    echo "== $(basename $so)"; cuobjdump --list-elf $so; done > /tmp/fx/so.list-elf.txt 2>&1
) &
FX=$!
# A timed slice of each target not built (SLICE=target:seconds,...): its edges' times.
for s in ${SLICE//,/ }; do
  t=${s%%:*}; secs=${s##*:}
  (cd $B && timeout -s INT $secs ninja -j ${JOBS:-32} $t > /tmp/slice-$t.log 2>&1); echo "slice $t rc=$?"
done
wait $FX
python3 - $B $OUT <<'PY'
import json, sys, pathlib
from vllm_matrix.stages.compile.ninja import target_figures
b, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
json.dump(target_figures(b), open(out / "targets.json", "w"), indent=1)
PY
tar -czf $OUT/fixtures.tgz -C /tmp fx
L=$(ls $VLLM_MATRIX_CACHE/builds/*/build.log | head -1); gzip -c $L > $OUT/build.log.gz
ls -la $OUT; du -sh $OUT
