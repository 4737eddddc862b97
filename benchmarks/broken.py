"""Acceptance: a deliberately broken setup ends in ERROR cells, never in a FAIL of vLLM.

Each scenario runs the real CLI (`python -m vllm_matrix run`) on one cell of the shipped
matrix in a workspace of its own and checks: exit code non-zero, no traceback, the cell's
verdict ERROR with a one-line cause and a fix, and nothing in compat.md's table that
blames vLLM. Scenarios:

- no-uv:        a fresh venv with vllm-matrix installed and uv uninstalled from it
- readonly:     VLLM_MATRIX_CACHE on a read-only mount
- index-down:   the index URL pointing at a closed local port
- disk-full:    VLLM_MATRIX_CACHE on a 64 MiB tmpfs (the toolkit does not fit)

Needs root for the mounts (tmpfs); run: nox -s bench-broken (-- --write saves the JSON to
reports/bench/broken.json).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vllm_matrix.infra import portable

REPO = Path(__file__).resolve().parents[1]
CELL = "vllm0.8.5-torch2.6.0-cu12.4-py3.12-sm90"
WARM = Path(os.environ.get("VLLM_MATRIX_CACHE", Path.home() / ".cache" / "vllm-matrix"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def mount_tmpfs(where: Path, size: str, ro: bool = False) -> None:
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True)


def warm_copy(dest: Path, parts: tuple[str, ...]) -> None:
    """A cache holding only ``parts`` of the warm one (hard links: no copy of GBs)."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in parts:
        if (WARM / p).exists():
            subprocess.run(["cp", "-al", str(WARM / p), str(dest / p)], check=True)


def run_cli(python: str, ws: Path, env: dict[str, str]) -> dict[str, object]:
    ws.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "matrix.toml", ws / "matrix.toml")
    (ws / "patches").symlink_to(REPO / "patches")
    t = time.monotonic()
    done = subprocess.run(
        [python, "-m", "vllm_matrix", "run", "--matrix", str(ws / "matrix.toml"),
         "--cell", CELL, "--depth", "toolkit"],
        capture_output=True, text=True, env=env, cwd=ws, check=False, timeout=1800,
    )  # fmt: skip
    out = done.stdout + done.stderr
    md = ws / "reports" / "compat.md"
    table = md.read_text().split("## Not answered")[0] if md.exists() else ""
    result = ws / "results" / f"{CELL}.json"
    verdict = json.loads(result.read_text())["verdict"] if result.exists() else {}
    return scrub(
        {
            "exit": done.returncode,
            "seconds": round(time.monotonic() - t, 1),
            "traceback": "Traceback (most recent call last)" in out,
            "verdict": verdict.get("verdict"),
            "depth": verdict.get("depth"),
            "cause": verdict.get("cause"),
            "fix": verdict.get("fix"),
            "printed": [ln for ln in out.splitlines() if "ERROR" in ln or "fix:" in ln][:6],
            "report_blames_vllm": any(w in table for w in ("| **FAIL**", "| **PREDICTED-FAIL**")),
        },
        ws.parent,
    )


def scrub(d: dict[str, object], tmp: Path) -> dict[str, object]:
    """No path of this machine in what is saved: the scenario's temp dir becomes $TMP."""
    roots = portable.Roots(((str(tmp), "$TMP"), (str(REPO), "$REPO")))
    out: dict[str, object] = portable.doc(d, roots)
    return out


def ok(r: dict[str, object]) -> bool:
    return bool(
        r["exit"] != 0
        and not r["traceback"]
        and r["verdict"] == "ERROR"
        and r["cause"]
        and "\n" not in str(r["cause"])
        and r["fix"]
        and not r["report_blames_vllm"]
    )


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="vllm-matrix-broken."))
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUDA_HOME")}
    out: dict[str, dict[str, object]] = {}
    mounts: list[Path] = []
    try:
        # no-uv: a venv of its own, vllm-matrix installed, uv taken out again
        venv = tmp / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = str(venv / "bin" / "python")
        subprocess.run([py, "-m", "pip", "install", "-q", "-e", str(REPO)], check=True)
        subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", "uv"], check=True)
        cache = tmp / "cache-no-uv"
        warm_copy(cache, ("blobs", "pins", "sources", "src", "toolkits", "downloads", "apt"))
        env = base | {"VLLM_MATRIX_CACHE": str(cache), "PATH": f"{venv}/bin:/usr/bin:/bin"}
        out["no-uv"] = run_cli(py, tmp / "ws-no-uv", env)

        ro = tmp / "ro-cache"
        mount_tmpfs(ro, "1m", ro=True)
        mounts.append(ro)
        out["readonly"] = run_cli(
            sys.executable, tmp / "ws-ro", base | {"VLLM_MATRIX_CACHE": str(ro)}
        )

        url = f"http://127.0.0.1:{closed_port()}/simple"
        env = base | {"VLLM_MATRIX_CACHE": str(tmp / "cache-idx"), "VLLM_MATRIX_INDEX_URL": url}
        out["index-down"] = run_cli(sys.executable, tmp / "ws-idx", env)

        small = tmp / "small-cache"
        mount_tmpfs(small, "64m")
        mounts.append(small)
        out["disk-full"] = run_cli(
            sys.executable, tmp / "ws-full", base | {"VLLM_MATRIX_CACHE": str(small)}
        )
    finally:
        for m in mounts:
            subprocess.run(["umount", str(m)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    doc = {
        "what": "broken setups -> ERROR cells (benchmarks/broken.py)",
        "cell": CELL,
        "loadavg": list(os.getloadavg()),
        "scenarios": {k: v | {"ok": ok(v)} for k, v in out.items()},
    }
    text = json.dumps(doc, indent=1)
    print(text)
    if "--write" in sys.argv:
        (REPO / "reports" / "bench" / "broken.json").write_text(text + "\n")
    return 0 if all(ok(v) for v in out.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
