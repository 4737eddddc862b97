#!/bin/bash
# Download the wheels the GPU machine lacks for a vLLM release (cp312, manylinux x86_64)
# into .whl/<group>/, the way the device notes' recipe does (pip download --no-deps
# --only-binary=:all:), and say whether they fit the 64 MiB a command may carry.
#
#   bash benchmarks/device/wheels_for_device.sh [VLLM=0.20.0] [GROUP=core]   # core | lazy | conflict
#
# The list comes from benchmarks/device/device-wheels-vllm<VLLM>.txt (benchmarks/device/device_wheels.py).
# On the GPU machine, in each command that needs them (carry .whl/<group>):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/<group>/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/../.."
V=${1:-0.20.0}
G=${2:-core}
PY=${PYTHON:-python3}
LIST=benchmarks/device/device-wheels-vllm$V.txt
[ -f "$LIST" ] || { echo "error: no $LIST; run: python benchmarks/device/device_wheels.py --vllm $V" >&2; exit 2; }
mapfile -t PINS < <(awk -v g="[$G]" '/^\[/{on=($0==g); next} on && /==/{print $1}' "$LIST")
[ ${#PINS[@]} -gt 0 ] || { echo "error: no [$G] section in $LIST" >&2; exit 2; }
D=.whl/$G
rm -rf "$D" && mkdir -p "$D"
plats=()
for p in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 \
         manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  plats+=(--platform "${p}_x86_64")
done
start=$(date +%s)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${plats[@]}" -d "$D" "${PINS[@]}"
secs=$(( $(date +%s) - start ))
n=$(ls "$D"/*.whl | wc -l)
dups=$(ls "$D"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z_.' 'a-z--' | sort | uniq -d)
[ -z "$dups" ] || { echo "error: two versions of: $dups (pip install would stop)" >&2; exit 1; }
# They must install together, as the device command will (no index, no deps), for cp312.
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$t/site" \
  --python-version 3.12 --implementation cp "${plats[@]}" --only-binary=:all: "$D"/*.whl
installed=$(du -sb "$t/site" | cut -f1)
glibc=$(ls "$D" | grep -o 'manylinux_2_[0-9]*' | cut -d_ -f3 | sort -n | tail -1)
bytes=$(du -cb "$D"/*.whl | tail -1 | cut -f1)
# What else travels with a command: the tracked files of the working tree.
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | awk '/\ttotal$/{s+=$1} END{print s+0}')
limit=$((64 * 1024 * 1024))
room=$((limit - tree))
cmds=$(( (bytes + room - 1) / room ))
"$PY" - "$G" "$n" "${#PINS[@]}" "$bytes" "$tree" "$room" "$cmds" "$secs" "$installed" "${glibc:-5}" <<'PY'
import json, sys
g, n, pins, b, tree, room, cmds, secs, inst, glibc = sys.argv[1], *map(int, sys.argv[2:])
mib = lambda x: round(x / 2**20, 2)
print(json.dumps({"group": g, "wheels": n, "pins": pins, "mib": mib(b),
                  "tree_mib": mib(tree), "room_per_command_mib": mib(room),
                  "fits_one_command": b <= room, "commands_needed": cmds,
                  "download_seconds": secs, "installed_mib": mib(inst),
                  "needs_glibc": f"2.{glibc}"}))
PY
[ "$n" -eq "${#PINS[@]}" ] || { echo "error: $n wheels for ${#PINS[@]} pins" >&2; exit 1; }
