#!/bin/bash
# Probe vLLM releases on another machine with no network (the GPU host), in its own env:
# `--env current` (its torch, its CUDA toolkit). What produced reports/device/*.json.
#
# Carried to that machine under .cache/carry/ (prepared here, never committed):
#   vm/pins/vllm-V.json + vm/blobs/sha256/..   the release sdists, as in the cache
#   cutlass-TAG.tgz                            CUTLASS's include/, tools/util/include,
#                                              examples/common, examples/77_blackwell_fmha at
#                                              TAG (git archive of a CUTLASS clone)
#   wheels/                                    packaging, tabulate (if the env lacks them)
# Run there:  RUNS="0.20.0:12.0:v4.4.2 0.19.1:9.0:v4.2.1" OUT=dir bash benchmarks/device/elsewhere.sh
# then copy dir/*.json into reports/device/ and run `nox -s report`.
set -x
cd "$(dirname "$0")/../.."   # repo root
C=$PWD/.cache/carry
export VLLM_MATRIX_CACHE=$PWD/.cache/vm
mkdir -p $VLLM_MATRIX_CACHE && cp -r $C/vm/* $VLLM_MATRIX_CACHE/
python3 -c "import packaging, tabulate" 2>/dev/null || python3 -m pip install -q --no-index --find-links $C/wheels packaging tabulate
export PYTHONPATH=$PWD/src
nproc; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
W=/tmp/dws; mkdir -p $W; ln -sfn $PWD/patches $W/patches
for run in $RUNS; do
  IFS=: read v arch tag <<< "$run"
  rm -rf $C/cutlass; tar -xzf $C/cutlass-$tag.tgz -C $C
  export VLLM_CUTLASS_SRC_DIR=$C/cutlass
  (cd $W && /usr/bin/time -v -o $OUT/probe-$v-$arch.time python3 -m vllm_matrix run --env current --vllm $v --arch $arch --depth probe > $OUT/probe-$v-$arch.out 2>&1)
  echo "probe $v $arch rc=$?"; tail -3 $OUT/probe-$v-$arch.out
done
cp $W/results/*.json $OUT/
# logs of failed units only (the JSON names them), at most 4
python3 - $W $OUT <<'PY'
import json, shutil, sys, pathlib
w, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
n = 0
for f in sorted((w / "results").glob("*.json")):
    for s in json.loads(f.read_text())["stages"]:
        for u in s.get("details", {}).get("units", []) if s["stage"] == "probe" else []:
            if u["status"] == "fail" and u.get("log") and n < 4:
                shutil.copy(u["log"], out / (f.stem + "." + pathlib.Path(u["log"]).name)); n += 1
PY
du -sh $OUT
