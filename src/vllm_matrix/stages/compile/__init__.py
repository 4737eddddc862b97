"""The build stage (PLAN's ``build``; a package named ``build`` hides from tools that skip
build/ dirs): a vLLM wheel built against the cell's existing torch.

What vLLM's docs describe for "build with an existing PyTorch installation", done so a
machine can run it unattended and a stopped run resumes:

1. A work copy of the (read-only, cached) source tree in ``<work>/src``, made once:
   copied under a temporary name, patched (the series entries for this version),
   torch pins removed like vLLM's ``use_existing_torch.py``, marked, then renamed into
   place. It is kept between runs: vLLM's setup.py configures CMake and runs ninja in
   ``build/temp.*`` inside the tree (pip >= 21.3 builds a local directory in place), so
   a rerun after Ctrl-C or kill -9 lets ninja skip every finished object.
2. ``<env python> -m pip wheel -v --no-build-isolation --no-deps <work>/src`` with the
   fixups' environment, MAX_JOBS / NVCC_THREADS sized from cores and MemAvailable, and
   ccache (a CCACHE_DIR shared under the cache) when ``ccache`` is on the env's PATH.
   ninja's ``[n/N]`` lines become progress messages (at most one every few seconds);
   the full output goes to the log.
3. The wheel gets one local version label naming CUDA and torch (``0.4.2+cu124torch2.3``;
   a label vLLM put there itself, like ``+cu124``, is replaced) and is written into
   ``dist/`` by rename: dist/ never holds half a wheel.

``audit_wheel`` and ``smoke`` (module ``audit``) check the result.

Measured on the canary (vLLM 0.4.2, 2 shared cores): ninja starts each compile in a
process group of its own, so ``kill -9`` of the build's process group leaves the
running nvcc/cicc jobs behind as orphans; they are not in .ninja_log, so the next run
compiles those units again; it first ends whatever still runs inside the work copy
(``proc.working_in``), so no orphan writes into the build dir beside ninja. ``cmake --build``
relays ninja's output in bursts when it is not a terminal: the ``[n/N]`` lines (and so
the progress messages) can lag; .ninja_log, which the "all targets" count reads, does not.

Modules: ``stage`` (``build_wheel``, the steps above), ``workcopy`` (step 1), ``pins`` (the
torch pins it removes), ``plan`` (MAX_JOBS / NVCC_THREADS), ``ccache``, ``ninja`` (progress
and how far a build got), ``wheel`` (step 3), ``partial`` (``--targets`` builds: the
setup.py driver's arguments (the driver is vllm_matrix/workers/partial_driver.py), FetchContent
stand-ins, their audit and smoke test), ``schedule`` (longest edges first; also loaded by path
by the driver), ``cost`` (the build-cost model), ``installable``, ``carried`` (a partial
build exported to another machine and taken there), ``handoff`` (the sources a build is
handed, checked before it compiles, and what its result hands on), ``errors``.
May import: sources, gpu, cmake, knowledge, infra, workers (for its paths), and other stages'
public names.
"""

from vllm_matrix.stages.compile.ccache import remote_setting
from vllm_matrix.stages.compile.ninja import progress_of
from vllm_matrix.stages.compile.partial import parse_targets
from vllm_matrix.stages.compile.stage import build_wheel
from vllm_matrix.stages.compile.workcopy import work_dir

__all__ = ["build_wheel", "parse_targets", "progress_of", "remote_setting", "work_dir"]
