from __future__ import annotations

import errno
import inspect
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vllm_matrix.infra import results
from vllm_matrix.infra.config import Cell, Options, load_matrix
from vllm_matrix.infra.errors import MatrixError, NotAvailable, ProgramMissing
from vllm_matrix.pipeline import context, plan, runner
from vllm_matrix.pipeline.context import CellContext
from vllm_matrix.stages.preflight import Host

CMAKE = """
cmake_minimum_required(VERSION 3.26)
set(PYTHON_SUPPORTED_VERSIONS "3.9" "3.10" "3.11" "3.12")
set(CUDA_SUPPORTED_ARCHS "7.0;7.5;8.0;8.6;8.9;9.0;10.0;12.0")
set(TORCH_SUPPORTED_VERSION_CUDA "2.6.0")
"""


def tree(tmp: Path, code: str = "") -> Path:
    root = tmp / "vllm"
    (root / "csrc").mkdir(parents=True)
    (root / "CMakeLists.txt").write_text(CMAKE)
    (root / "setup.py").write_text("")
    (root / "PKG-INFO").write_text("Version: 0.8.5\n")
    (root / "csrc" / "k.cu").write_text(code)
    return root


# The machine's facts, fixed: no outcome here depends on the host's gcc, CUDA installs,
# cores, load or GPU.
MACHINE: dict[str, Any] = {
    "host": Host(gcc_major=12, system_cuda={}, conda_prefix=None),
    "mach": {
        "arch": "x86_64",
        "cpus": 2,
        "mem_gib": 24,
        "gpu": None,
        "os": "test",
        "python": "3.11",
    },
}


def cell(root: Path, arch: str = "9.0") -> Cell:
    return Cell("0.8.5", "2.6.0", "12.4", "debian", "3.12", (arch,), source=f"path:{root}")


# ---- run_cell's contract, on a plan of stand-in stage functions (the plan is injected) ------

StageRun = Callable[[CellContext], results.StageResult]


def swapped(**runs: StageRun) -> tuple[plan.Stage, ...]:
    """PLAN with the named stages' functions replaced (their needs, depth, long ... kept)."""
    assert set(runs) <= set(plan.STAGES), set(runs) - set(plan.STAGES)
    return tuple(replace(s, run=runs.get(s.name, s.run)) for s in plan.PLAN)


def recording(
    calls: list[str], outcomes: dict[str, results.Status | BaseException] | None = None
) -> tuple[plan.Stage, ...]:
    """PLAN with every stage a stand-in that records its name and passes, or ends as
    ``outcomes`` says (a status, or an exception it raises)."""
    outcomes = outcomes or {}

    def stand_in(name: str) -> StageRun:
        def run(ctx: CellContext) -> results.StageResult:
            calls.append(name)
            out = outcomes.get(name, results.Status.PASS)
            if isinstance(out, BaseException):
                raise out
            found = (results.Finding(name, "fail", f"{name} said no"),) if out == "fail" else ()
            return results.StageResult(name, out, 0.0, f"{name} ran", found)

        return run

    return swapped(**{s.name: stand_in(s.name) for s in plan.PLAN})


def fake_cell(tmp: Path) -> Cell:
    """A cell no stage of the stand-in plans reads (no tree behind its source)."""
    return cell(tmp / "no-tree")


@pytest.mark.parametrize("depth", plan.DEPTHS)
def test_run_cell_walks_every_stage_of_the_depth_in_plan_order(tmp_path: Path, depth: str) -> None:
    calls: list[str] = []
    ws = context.Workspace(tmp_path / "ws")
    stages = runner.run_cell(
        fake_cell(tmp_path), ws, depth=depth, plan_stages=recording(calls), **MACHINE
    )
    names = [s.name for s in plan.PLAN]
    expected = names[: names.index(plan.LAST_STAGE[depth]) + 1]
    assert calls == expected
    assert [s.stage for s in stages] == expected
    assert all(s.status == results.Status.PASS for s in stages)
    doc = results.read(ws.results / f"{fake_cell(tmp_path).id}.json")
    assert [s["stage"] for s in doc["stages"]] == expected  # the file holds the same walk


@pytest.mark.parametrize(
    ("stopper", "status"),
    [
        ("facts", results.Status.FAIL),
        ("preflight", results.Status.PREDICTED_FAIL),
        ("toolkit", results.Status.SKIP),
        ("patches", results.Status.ERROR),
        ("probe", results.Status.FAIL),
    ],
)
def test_a_stage_that_does_not_pass_stops_the_cell(
    tmp_path: Path, stopper: str, status: results.Status
) -> None:
    calls: list[str] = []
    walk = recording(calls, {stopper: status})
    ws = context.Workspace(tmp_path / "ws")
    stages = runner.run_cell(fake_cell(tmp_path), ws, depth="build", plan_stages=walk, **MACHINE)
    names = [s.name for s in plan.PLAN]
    assert calls == names[: names.index(stopper) + 1]
    assert stages[-1].stage == stopper and stages[-1].status == status


def test_force_goes_on_past_a_prediction_only(tmp_path: Path) -> None:
    calls: list[str] = []
    walk = recording(calls, {"preflight": results.Status.PREDICTED_FAIL})
    ws = context.Workspace(tmp_path / "ws")
    stages = runner.run_cell(
        fake_cell(tmp_path), ws, depth="probe", force=True, plan_stages=walk, **MACHINE
    )
    assert calls == [s.name for s in plan.cut("probe")]
    assert [s.status for s in stages][2:4] == [results.Status.PREDICTED_FAIL, results.Status.PASS]
    calls.clear()
    walk = recording(calls, {"facts": results.Status.FAIL})
    runner.run_cell(fake_cell(tmp_path), ws, depth="probe", force=True, plan_stages=walk, **MACHINE)
    assert calls == ["source", "facts"]  # a FAIL is no prediction: force does not pass it


@pytest.mark.parametrize(
    "exc",
    [
        ProgramMissing("uv not found", fix="install it"),
        NotAvailable("not on this machine"),
        OSError(errno.ENOSPC, "No space left on device", "/c/x"),
        KeyError("nvcc"),
        AssertionError("a bug"),
    ],
)
def test_an_exception_in_a_stage_is_its_error_and_stops_the_cell(
    tmp_path: Path, exc: BaseException
) -> None:
    calls: list[str] = []
    walk = recording(calls, {"env": exc})
    ws = context.Workspace(tmp_path / "ws")
    stages = runner.run_cell(fake_cell(tmp_path), ws, depth="probe", plan_stages=walk, **MACHINE)
    assert calls == ["source", "facts", "preflight", "toolkit", "env"]
    last = stages[-1]
    # NotAvailable: cannot be had here (SKIP); every other exception is the tool's: ERROR
    want = results.Status.SKIP if isinstance(exc, NotAvailable) else results.Status.ERROR
    assert (last.stage, last.status) == ("env", want)
    assert [f.level for f in last.findings] == ["skip" if want == "skip" else "error"]
    assert results.verdict_of(stages).verdict != results.Verdict.FAIL


def test_a_sided_stage_whose_failures_are_all_the_machines_is_an_error(tmp_path: Path) -> None:
    def oom(ctx: CellContext) -> results.StageResult:
        f = results.Finding("signature:out_of_memory", "fail", "cc1plus killed", "fewer jobs")
        return results.StageResult("probe", results.Status.FAIL, 1.0, "1 failed", (f,))

    ws = context.Workspace(tmp_path / "ws")
    walk = tuple(
        replace(s, run=oom) if s.name == "probe" else s for s in recording([])
    )  # PLAN's probe is sided
    stages = runner.run_cell(fake_cell(tmp_path), ws, depth="probe", plan_stages=walk, **MACHINE)
    assert stages[-1].status == results.Status.ERROR
    unsided = tuple(replace(s, sided=False) if s.name == "probe" else s for s in walk)
    stages = runner.run_cell(fake_cell(tmp_path), ws, depth="probe", plan_stages=unsided, **MACHINE)
    assert stages[-1].status == results.Status.FAIL  # the stage's own flag decides


def test_ctrl_c_in_a_stage_records_what_its_interrupted_hook_says(tmp_path: Path) -> None:
    calls: list[str] = []
    walk = tuple(
        replace(s, interrupted=lambda ctx: {"how_far": ctx.cell.id}) if s.name == "toolkit" else s
        for s in recording(calls, {"toolkit": KeyboardInterrupt()})
    )
    ws = context.Workspace(tmp_path / "ws")
    c = fake_cell(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        runner.run_cell(c, ws, depth="build", plan_stages=walk, **MACHINE)
    assert calls == ["source", "facts", "preflight", "toolkit"]
    d = results.read(ws.results / f"{c.id}.json")
    assert [(s["stage"], s["status"]) for s in d["stages"]][-1] == ("toolkit", "interrupted")
    assert d["stages"][-1]["details"] == {"how_far": c.id}
    assert d["verdict"]["verdict"] == results.Verdict.UNKNOWN


def test_preflight_depth_writes_a_valid_result(tmp_path: Path) -> None:
    ws = context.Workspace(tmp_path / "ws")
    c = cell(tree(tmp_path))
    stages = runner.run_cell(c, ws, depth="preflight", **MACHINE)
    assert [s.stage for s in stages] == ["source", "facts", "preflight"]
    d = results.read(ws.results / f"{c.id}.json")
    assert d["verdict"]["verdict"] == "PREFLIGHT-OK"


def test_an_unreadable_modelopt_is_a_warning_not_an_error(tmp_path: Path) -> None:
    """Issue 22: 0.30.0 ... 0.34.0 wrote QUANT_ALGOS in a way ast.literal_eval refuses, and
    every preflight of them ended in ERROR. What the reader cannot evaluate is a warning
    naming file:line; the cell keeps its verdict and the ModelOpt column says unknown."""
    root = tree(tmp_path)
    q = root / "vllm" / "model_executor" / "layers" / "quantization"
    q.mkdir(parents=True)
    (q / "__init__.py").write_text('M = {"modelopt": ModelOptFp8Config}\n')
    (q / "base_config.py").write_text("class QuantizationConfig:\n    pass\n")
    (q / "modelopt.py").write_text(
        "QUANT_ALGOS = list(load_algos())\n\n"
        "class ModelOptFp8Config:\n"
        "    @classmethod\n"
        "    def from_config(cls, config):\n"
        "        return cls()\n"
    )
    ws = context.Workspace(tmp_path / "ws")
    c = cell(root)
    stages = runner.run_cell(c, ws, depth="preflight", **MACHINE)
    pre = stages[-1]
    assert pre.status == results.WARN, pre
    (w,) = [f for f in pre.findings if f.rule == "unreadable"]
    where = "vllm/model_executor/layers/quantization/modelopt.py:1"
    assert w.evidence == (where,) and "list(load_algos())" in w.message
    assert "the ModelOpt FP8 column (its config parser) rests on it" in w.message
    assert pre.details["modelopt_fp8"] == f"unknown: {where} could not be read"
    d = results.read(ws.results / f"{c.id}.json")
    assert d["verdict"]["verdict"] == "PREFLIGHT-OK"


def test_predicted_failure_stops_unless_forced(tmp_path: Path) -> None:
    ws = context.Workspace(tmp_path / "ws")
    c = cell(tree(tmp_path), "12.0")
    calls: list[str] = []

    def toolkit(ctx: CellContext) -> results.StageResult:
        calls.append(ctx.cell.provider)
        raise NotAvailable("not here", fix="elsewhere")

    walk = swapped(toolkit=toolkit)  # the real preflight predicts; the toolkit a stand-in
    stages = runner.run_cell(c, ws, depth="toolkit", plan_stages=walk, **MACHINE)
    assert stages[-1].stage == "preflight" and stages[-1].status == "predicted-fail"
    assert calls == []
    stages = runner.run_cell(c, ws, depth="toolkit", force=True, plan_stages=walk, **MACHINE)
    assert calls == ["debian"] and stages[-1].stage == "toolkit"
    assert stages[-1].status == "skip"
    # matrix.toml's options = { force = true } does the same for its cell (the seed rows)
    seeded = replace(c, options=Options(force=True))
    stages = runner.run_cell(seeded, ws, depth="toolkit", plan_stages=walk, **MACHINE)
    assert calls == ["debian", "debian"] and stages[-1].stage == "toolkit"


def test_ctrl_c_leaves_a_valid_interrupted_result(tmp_path: Path) -> None:
    ws = context.Workspace(tmp_path / "ws")
    c = cell(tree(tmp_path))

    def boom(ctx: CellContext) -> results.StageResult:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_cell(c, ws, depth="preflight", plan_stages=swapped(facts=boom), **MACHINE)
    d = results.read(ws.results / f"{c.id}.json")
    assert d["stages"][-1] == d["stages"][-1] | {"stage": "facts", "status": "interrupted"}
    assert d["verdict"]["verdict"] == "UNKNOWN"


def test_depth_errors_say_what_exists() -> None:
    with pytest.raises(MatrixError, match="did you mean 'probe'"):
        plan.check_depth("prob")
    plan.check_depth("toolkit")


def test_matrix_run_and_report(tmp_path: Path) -> None:
    root = tree(tmp_path, "auto p = x.data_ptr<at::Float8_e8m0fnu>();\n")
    m = tmp_path / "matrix.toml"
    m.write_text(
        f'[[cell]]\nvllm = "0.8.5"\ntorch = "2.6.0"\ncuda = "12.4"\nprovider = "debian"\n'
        f'python = "3.12"\narch = ["9.0"]\nsource = "path:{root}"\n'
    )
    matrix = load_matrix(m)
    ws = context.Workspace(tmp_path)
    done = runner.run_matrix(matrix, ws, "preflight", echo=lambda s: None, **MACHINE)
    assert done[0][1].verdict == "PREDICTED-FAIL"
    assert "csrc/k.cu:1" in done[0][1].cause


def test_cells_side_by_side_answer_in_matrix_order(tmp_path: Path) -> None:
    bad = tree(tmp_path / "a", "auto p = x.data_ptr<at::Float8_e8m0fnu>();\n")
    good = tree(tmp_path / "b")
    m = tmp_path / "matrix.toml"
    m.write_text(
        "".join(
            f'[[cell]]\nvllm = "0.8.5"\ntorch = "{t}"\ncuda = "12.4"\nprovider = "debian"\n'
            f'python = "3.12"\narch = ["9.0"]\nsource = "path:{root}"\n'
            for t, root in (("2.6.0", bad), ("2.7.0", good), ("2.7.1", good))
        )
    )
    said: list[str] = []
    ws = context.Workspace(tmp_path)
    one = runner.run_matrix(load_matrix(m), ws, "preflight", echo=lambda s: None, **MACHINE)
    two = runner.run_matrix(load_matrix(m), ws, "preflight", echo=said.append, at_once=2, **MACHINE)
    assert [c.id for c, _ in two] == [c.id for c, _ in one]
    assert [v.verdict for _, v in two] == [v.verdict for _, v in one]
    assert two[0][1].verdict == "PREDICTED-FAIL"
    assert sorted(s.split("]")[0] for s in said if s.startswith("[")) == ["[1/3", "[2/3", "[3/3"]


def test_shallower_rerun_keeps_deeper_stages(tmp_path: Path) -> None:
    ws = context.Workspace(tmp_path / "ws")
    c = cell(tree(tmp_path))
    runner.run_cell(c, ws, depth="preflight", **MACHINE)
    path = ws.results / f"{c.id}.json"
    d = results.read(path)
    deeper = results.StageResult("toolkit", "pass", 1.0, "nvcc 12.4")
    stages = [*map(results.StageResult.from_json, d["stages"]), deeper]
    results.write(ws.results, c, stages, d["machine"])
    runner.run_cell(c, ws, depth="preflight", **MACHINE)
    assert [s["stage"] for s in results.read(path)["stages"]][-1] == "toolkit"


def test_a_killed_long_stage_leaves_an_interrupted_result(tmp_path: Path) -> None:
    # kill -9 runs no handler: the result must already say where the run is, before the
    # long stage starts. Read the file from inside the stage, as a kill would leave it.
    ws = context.Workspace(tmp_path / "ws")
    c = cell(tree(tmp_path))
    seen: dict[str, object] = {}

    def toolkit(ctx: CellContext) -> results.StageResult:
        seen.update(results.read(ws.results / f"{c.id}.json"))
        raise NotAvailable("not here")

    runner.run_cell(c, ws, depth="toolkit", plan_stages=swapped(toolkit=toolkit), **MACHINE)
    stages = seen["stages"]
    assert isinstance(stages, list) and stages[-1]["stage"] == "toolkit"
    assert stages[-1]["status"] == "interrupted" and "did not finish" in stages[-1]["summary"]
    assert seen["verdict"] == seen["verdict"] | {"verdict": "UNKNOWN", "depth": "toolkit"}
    final = results.read(ws.results / f"{c.id}.json")  # and the finished run replaces it
    assert final["stages"][-1]["status"] == "skip"


def test_build_is_a_depth() -> None:
    plan.check_depth("build")
    assert plan.LAST_STAGE["build"] == "smoke"


def ws_without_patches(tmp: Path) -> context.Workspace:
    """A workspace whose own (empty) series keeps the shipped patches off the fixture tree."""
    ws = context.Workspace(tmp / "ws")
    (ws.root / "patches").mkdir(parents=True)
    (ws.root / "patches" / "series.toml").write_text("")
    return ws


def build_fakes(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, sources: dict[str, object]
) -> tuple[dict[str, object], tuple[plan.Stage, ...]]:
    """The plan's adapters (plan.do_env, do_probe, do_build, do_audit, do_smoke) on fakes of
    what they call, and a plan whose toolkit stage is a stand-in: what the runner hands
    from stage to stage, and what the adapters passed on (``seen``)."""
    from vllm_matrix.sources import externals
    from vllm_matrix.sources.externals import ExternalDir
    from vllm_matrix.stages.env import TorchEnv
    from vllm_matrix.stages.env.fixups import Fixup, Fixups
    from vllm_matrix.stages.toolkit import Toolkit

    seen: dict[str, object] = {}
    tk = Toolkit("debian", "12.4", "12.4.131", tmp / "tk", tmp / "tk/bin/nvcc", ("9.0",), 13, ())

    def provide_env(python: str, torch: str, variant: str, **kw: object) -> TorchEnv:
        seen["variant"] = variant
        return TorchEnv(python, torch, variant, tmp, tmp / "py", tmp, "2.6.0+cu124", "12.4")

    real = inspect.signature(plan.build.build_wheel)

    def build_wheel(*a: object, **kw: object) -> results.StageResult:
        # every argument by its name in the real signature (a call it rejects fails here)
        seen["build"] = dict(real.bind(*a, **kw).arguments)
        return results.StageResult("build", "pass", 0.0, "built", details={"wheel": "/w.whl"})

    def audit_wheel(wheel: Path, tk_: object, archs: tuple[str, ...]) -> results.StageResult:
        seen["audited"] = (wheel, archs)
        return results.StageResult("audit", "pass", 0.0, "SASS 9.0")

    def smoke(wheel: Path, *a: object) -> results.StageResult:
        return results.StageResult(
            "smoke",
            "warn",
            0.0,
            "2/2 load",
            (results.Finding("import-vllm", "warn", "deps", "pip install"),),
        )

    dirs = {
        k: ExternalDir(
            k,
            "v1",
            Path(str(v)) if v else None,
            "cache" if v else "missing: not here",
            f"{k.upper()}_SRC_DIR",
        )
        for k, v in sources.items()
    }
    monkeypatch.setattr(plan.env_mod, "provide", provide_env)
    monkeypatch.setattr(
        plan.fixups, "compute", lambda *a: Fixups((Fixup("CUDA_HOME", "/tk", "x"),), ())
    )
    monkeypatch.setattr(
        plan.probe,
        "run_probe",
        lambda *a, **kw: results.StageResult("probe", "pass", 1.0, "8 units"),
    )
    monkeypatch.setattr(externals, "resolve_all", lambda *a, **kw: dirs)
    monkeypatch.setattr(plan.build, "build_wheel", build_wheel)
    monkeypatch.setattr(plan.audit, "audit_wheel", audit_wheel)
    monkeypatch.setattr(plan.audit, "smoke", smoke)

    def toolkit(ctx: CellContext) -> results.StageResult:
        ctx.toolkit = tk
        return results.StageResult("toolkit", results.Status.PASS, 0.0, "nvcc 12.4 (a stand-in)")

    return seen, swapped(toolkit=toolkit)


def test_build_depth_runs_build_audit_smoke_with_the_full_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen, walk = build_fakes(tmp_path, monkeypatch, {"cutlass": tmp_path / "cutlass"})
    ws = ws_without_patches(tmp_path)
    c = cell(tree(tmp_path))
    said: list[str] = []
    stages = runner.run_cell(
        c,
        ws,
        depth="build",
        echo=said.append,
        opts=context.BuildOptions(max_jobs=1),
        plan_stages=walk,
        **MACHINE,
    )
    assert [s.stage for s in stages][-5:] == ["patches", "probe", "build", "audit", "smoke"]
    assert seen["variant"] == "full"
    kw = seen["build"]
    assert isinstance(kw, dict)
    assert kw["extra_env"] == {"CUTLASS_SRC_DIR": str(tmp_path / "cutlass")}
    assert kw["jobs"] == 1 and kw["dist"] == ws.root / "dist" and kw["progress"] == said.append
    assert kw["work"] == plan.build.work_dir(c)  # in the cache: a rerun resumes it
    assert seen["audited"] == (Path("/w.whl"), ("9.0",))
    v = results.verdict_of(stages)
    assert (v.verdict, v.depth) == ("PASS", "smoke") and "deps" in v.cause


def test_build_with_missing_sources_stops_before_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen, walk = build_fakes(tmp_path, monkeypatch, {"cutlass": None})
    ws = ws_without_patches(tmp_path)
    c = cell(tree(tmp_path))
    stages = runner.run_cell(c, ws, depth="build", plan_stages=walk, **MACHINE)
    assert "build" not in seen and stages[-1].stage == "build" and stages[-1].status == "skip"
    assert "cutlass" in stages[-1].summary and "inv prefetch" in stages[-1].findings[0].fix
    v = results.verdict_of(stages)
    assert (v.verdict, v.depth) == ("PASS", "probe") and v.cause.startswith("build skipped: ")


def test_a_build_rerun_reuses_the_probe_that_passed_on_the_same_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, walk = build_fakes(tmp_path, monkeypatch, {})
    ws = ws_without_patches(tmp_path)
    c = cell(tree(tmp_path))
    runner.run_cell(
        c, ws, depth="probe", plan_stages=walk, **MACHINE
    )  # the probe, with the headers env
    probes: list[int] = []

    def counted(*a: object, **kw: object) -> results.StageResult:
        probes.append(1)
        return results.StageResult("probe", "pass", 1.0, "8 units")

    monkeypatch.setattr(plan.probe, "run_probe", counted)
    stages = runner.run_cell(c, ws, depth="build", plan_stages=walk, **MACHINE)
    probe_stage = next(s for s in stages if s.stage == "probe")
    assert probes == [] and "reused" in probe_stage.summary
    assert probe_stage.details["reused_from"]
    # Other inputs (another torch) mean a new probe.
    monkeypatch.setattr(
        plan.env_mod,
        "provide",
        lambda py, torch, variant, **kw: plan.env_mod.TorchEnv(
            py, torch, variant, tmp_path, tmp_path / "py", tmp_path, "2.6.0+cu126", "12.6"
        ),
    )
    runner.run_cell(c, ws, depth="build", plan_stages=walk, **MACHINE)
    assert probes == [1]


def test_a_shallower_rerun_through_long_stages_keeps_the_deeper_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The toolkit depth writes placeholders (long stages); the probe found earlier must
    # survive them.
    _, walk = build_fakes(tmp_path, monkeypatch, {})
    ws = ws_without_patches(tmp_path)
    c = cell(tree(tmp_path))
    runner.run_cell(c, ws, depth="probe", plan_stages=walk, **MACHINE)
    runner.run_cell(c, ws, depth="toolkit", plan_stages=walk, **MACHINE)
    d = results.read(ws.results / f"{c.id}.json")
    assert [s["stage"] for s in d["stages"]][-2:] == ["patches", "probe"]
    assert d["verdict"]["verdict"] == "PASS"


def test_report_lists_runs_copied_from_other_machines(tmp_path: Path) -> None:
    from vllm_matrix.report import compat as report

    root = tree(tmp_path, "")
    m = tmp_path / "matrix.toml"
    m.write_text(
        f'[[cell]]\nvllm = "0.8.5"\ntorch = "2.6.0"\ncuda = "12.4"\nprovider = "debian"\n'
        f'python = "3.12"\narch = ["9.0"]\nsource = "path:{root}"\n'
    )
    ws = context.Workspace(tmp_path)
    runner.run_matrix(load_matrix(m), ws, "preflight", echo=lambda s: None, **MACHINE)
    other = ws.reports / "device"
    other.mkdir(parents=True)
    c = cell(root)
    stages = [
        results.StageResult("source", "pass", 0.0, "x"),
        results.StageResult("probe", "pass", 9.0, "3 units, all passed"),
    ]
    (other / "elsewhere.json").write_text(
        json.dumps(results.envelope(c, stages, {"gpu": "H200", "cpus": 16}))
    )
    _, md = report.write(load_matrix(m), ws.results, ws.reports)
    text = md.read_text()
    assert "## Runs on other machines" in text and "`elsewhere`" in text
    assert "3 units, all passed" in text
    doc = json.loads((ws.reports / "compat.json").read_text())
    assert [r["verdict"] for r in doc["other_runs"]] == ["PASS"]


def test_ctrl_c_in_the_build_records_how_far_it_got(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, walk = build_fakes(tmp_path, monkeypatch, {})
    ws = ws_without_patches(tmp_path)
    c = cell(tree(tmp_path))

    def stopped(ctx: CellContext) -> results.StageResult:
        raise KeyboardInterrupt

    # the build stopped; its hook (plan.build_progress) reads how far the work dir got
    walk = tuple(replace(s, run=stopped) if s.name == "build" else s for s in walk)
    monkeypatch.setattr(plan.build, "progress_of", lambda work: {"edges_done": 7, "edges": 315})
    with pytest.raises(KeyboardInterrupt):
        runner.run_cell(c, ws, depth="build", plan_stages=walk, **MACHINE)
    d = results.read(ws.results / f"{c.id}.json")
    last = d["stages"][-1]
    assert last["stage"] == "build" and last["status"] == "interrupted"
    assert last["details"]["progress"] == {"edges_done": 7, "edges": 315}
    assert d["verdict"]["verdict"] == "PASS" and d["verdict"]["depth"] == "probe"


# ---- ERROR: the tool's or the machine's failure, never a FAIL of vLLM ---------------------


def raising_toolkit(exc: BaseException) -> tuple[plan.Stage, ...]:
    """PLAN whose toolkit stage raises ``exc``."""

    def toolkit(ctx: CellContext) -> results.StageResult:
        raise exc

    return swapped(toolkit=toolkit)


@pytest.mark.parametrize(
    ("exc", "cause", "fix"),
    [
        (
            ProgramMissing("uv not found (x)", fix="it is a dependency of vllm-matrix (uv)"),
            "uv not found",
            "dependency of vllm-matrix",
        ),
        (OSError(errno.ENOSPC, "No space left on device", "/c/x"), "no space left", "free disk"),
        (OSError(errno.EROFS, "Read-only file system", "/c"), "cannot write", "writable"),
        (KeyError("nvcc"), "internal error in vllm-matrix: KeyError", "a bug in vllm-matrix"),
    ],
)
def test_a_stage_that_raises_is_an_error_with_cause_and_fix(
    tmp_path: Path, exc: BaseException, cause: str, fix: str
) -> None:
    ws = context.Workspace(tmp_path / "ws")
    c = cell(tree(tmp_path))
    stages = runner.run_cell(c, ws, depth="toolkit", plan_stages=raising_toolkit(exc), **MACHINE)
    assert stages[-1].stage == "toolkit" and stages[-1].status == results.ERROR
    v = results.verdict_of(stages)
    assert v.verdict == "ERROR" and v.depth == "toolkit"
    assert cause in v.cause and fix in v.fix
    assert "\n" not in v.cause  # one line


def test_debug_lets_a_bug_through(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        runner.run_cell(
            cell(tree(tmp_path)),
            context.Workspace(tmp_path / "ws"),
            depth="toolkit",
            opts=context.BuildOptions(debug=True),
            plan_stages=raising_toolkit(KeyError("nvcc")),
            **MACHINE,
        )


def _probe_failed_with(rule: str) -> results.StageResult:
    f = results.Finding(rule, "fail", "it failed", "fix it")
    return results.StageResult("probe", results.FAIL, 1.0, "1 units, 1 failed", (f,))


@pytest.mark.parametrize(
    ("rule", "tool_made", "status"),
    [
        ("signature:out_of_memory", False, results.ERROR),  # the machine's
        ("signature:cuda_math_libs_missing", True, results.ERROR),  # the tool's toolkit
        ("signature:cuda_math_libs_missing", False, results.FAIL),  # the user's env
        ("signature:torch_lacks_float8_e8m0fnu", True, results.FAIL),  # vLLM x torch
        ("unknown", True, results.FAIL),
    ],
)
def test_probe_failures_are_sorted_by_side(rule: str, tool_made: bool, status: str) -> None:
    r = runner._timed("probe", lambda: _probe_failed_with(rule), tool_made=tool_made)
    assert r.status == status
    assert results.verdict_of([r]).verdict == ("ERROR" if status == results.ERROR else "FAIL")


def test_error_cells_are_listed_apart_and_exit_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vllm_matrix import cli

    root = tree(tmp_path)
    m = tmp_path / "ws" / "matrix.toml"
    m.parent.mkdir()
    m.write_text(
        f'[[cell]]\nvllm = "0.8.5"\ntorch = "2.6.0"\ncuda = "12.4"\narch = ["9.0"]\n'
        f'python = "3.12"\nprovider = "debian"\n'
        f'source = "path:{root}"\n'
    )
    # through the CLI, which takes no plan: the toolkit's provider raises

    def provide(*a: object, **kw: object) -> object:
        raise ProgramMissing("uv not found (x)", fix="pip install -e .")

    monkeypatch.setattr(plan.toolkit, "provide", provide)
    monkeypatch.setattr(plan.preflight, "detect_host", lambda: MACHINE["host"])
    monkeypatch.setattr(results, "machine", lambda gpus: MACHINE["mach"])
    rc = cli.main(["run", "--matrix", str(m), "--depth", "toolkit"])
    out = capsys.readouterr()
    assert rc == 3, out.err
    assert "ERROR" in out.out and "fix: pip install -e ." in out.out
    assert "1 cell(s) ended in ERROR" in out.err
    md = (tmp_path / "ws" / "reports" / "compat.md").read_text()
    table, _, rest = md.partition("## Not answered: the tool or the machine failed")
    assert rest and "uv not found" in rest
    assert "| **ERROR**" not in table  # never shown as a verdict about vLLM


def test_torch_source_of_variants(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm_matrix.infra import index
    from vllm_matrix.infra.config import Cell
    from vllm_matrix.infra.errors import NotAvailable
    from vllm_matrix.stages.env import torch_source

    monkeypatch.delenv("VLLM_MATRIX_TORCH_INDEX_CU128", raising=False)
    monkeypatch.delenv("VLLM_MATRIX_TORCH_INDEX_CU124", raising=False)

    def c(torch: str, idx: tuple[tuple[str, str], ...] = ()) -> Cell:
        return Cell("0.10.1", torch, "12.8", "system", "3.12", ("12.0",), torch_index=idx)

    assert torch_source(c("2.7.1")) == ("2.7.1", None)
    # PyPI's 2.6.0 is the +cu124 build: no variant index needed
    assert torch_source(c("2.6.0+cu124")) == ("2.6.0", None)
    with pytest.raises(NotAvailable, match="none is configured") as e:
        torch_source(c("2.7.1+cu128"))
    assert "VLLM_MATRIX_TORCH_INDEX_CU128" in (e.value.fix or "")

    url = "http://127.0.0.1:9/cu128"

    def files(project: str, base: str | None = None) -> tuple[index.IndexFile, ...]:
        assert base == url
        from packaging.version import Version

        return (index.IndexFile("t.whl", url, "0" * 64, Version("2.7.1+cu128"), "wheel", False),)

    monkeypatch.setattr(index, "project_files", files)
    assert torch_source(c("2.7.1+cu128", (("cu128", url),))) == ("2.7.1+cu128", url)
    with pytest.raises(NotAvailable, match="not on the cu128 index"):
        torch_source(c("2.7.0+cu128", (("cu128", url),)))

    def down(project: str, base: str | None = None) -> tuple[index.IndexFile, ...]:
        from vllm_matrix.infra.errors import SourceError

        raise SourceError("connection refused")

    monkeypatch.setattr(index, "project_files", down)
    with pytest.raises(NotAvailable, match="cannot be read"):
        torch_source(c("2.7.1+cu128", (("cu128", url),)))
