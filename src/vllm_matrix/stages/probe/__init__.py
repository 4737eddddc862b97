"""Probe: compile only the translation units that decide whether a cell builds.

A full vLLM build is hours on two cores; whether (vLLM, torch, CUDA, arch) compiles is
mostly decided by a handful of units and, inside each, by the host C++ front end:
``nvcc --dryrun`` shows the pipeline as host ``gcc -E`` -> ``cudafe++`` (EDG, full C++
semantic check of the host side: "namespace "at" has no member "Float8_e8m0fnu"") ->
device ``gcc -E`` -> ``cicc`` (device front end + code generation) -> ``ptxas`` ->
``fatbinary`` -> host ``gcc -c``. Measured (nvcc 12.4, sm_90, 2 shared cores): the front
end (host ``gcc -E`` 3-4 s + cudafe++ 45-80 s, almost all of it torch's headers) is 77 s for
0.8.5's gptq_marlin.cu, whose cicc alone runs > 818 s (stopped at 15 min); for lighter
units the whole pipeline is ~3x the front end (cicc ~75 s, host ``gcc -c`` ~100 s). So:

- depth ``front-end``: run the dry-run's steps up to and including cudafe++ (C++ units:
  ``g++ -fsyntax-only``);
- depth ``codegen``: the whole pipeline, but only for the unit's lowest arch;
- depth ``auto``: front end everywhere, then codegen of the arch-gated units whose
  estimated cost (``codegen_per_front_end`` x their front-end time) fits the budget.

Which units: the bindings file, every unit the API scan flagged (a header hit selects
a unit that includes it), and one representative per kernel family the cell's arches
enable. Families are not hard-coded: the tree's CMakeLists.txt and cmake/utils.cmake are
*evaluated* by a small CMake interpreter for the cell's arches and nvcc version, so
``cuda_archs_loose_intersection`` and ``set_gencode_flags_for_srcs`` give exactly the
per-file arches, and ``define_gpu_extension_target`` the per-target flags, of the real
build. Units whose include closure needs a FetchContent dependency that is not here
(CUTLASS) are reported "not probed", unless PyPI's ``nvidia-cutlass`` at the tree's pin
(or ``VLLM_CUTLASS_SRC_DIR``) supplies the headers.

Modules: configure (the CMake model of the tree), units (which units), includes, explain,
dryrun, runner (runs the steps), resources, torchflags, frontcache (front-end results cached
by content), stage (``run_probe``). May import: sources, cmake, gpu, knowledge, infra, and
other stages' public names.
"""

from vllm_matrix.stages.probe.configure import build_model
from vllm_matrix.stages.probe.dryrun import parse_dryrun
from vllm_matrix.stages.probe.explain import explain_flags, flags
from vllm_matrix.stages.probe.resources import job_limit
from vllm_matrix.stages.probe.runner import PRIORITY, stop_all
from vllm_matrix.stages.probe.stage import PROBE_DEPTHS, UNITS_MODES, run_probe
from vllm_matrix.stages.probe.units import Unit, select_units

__all__ = [
    "PRIORITY",
    "PROBE_DEPTHS",
    "UNITS_MODES",
    "Unit",
    "build_model",
    "explain_flags",
    "flags",
    "job_limit",
    "parse_dryrun",
    "run_probe",
    "select_units",
    "stop_all",
]
