"""The stages of PLAN (pipeline/plan.py), one module or package each, and nothing else:
facts, preflight/ (+ the API scan, the arch gates, the ModelOpt FP8 column), toolkit/,
env/ (+ fixups, a prefix read from its files), patches, probe/, compile/ (the ``build``
stage: no package may be named build), audit (the ``audit`` and ``smoke`` stages), gpu,
model/. The ``source`` stage's tree comes from vllm_matrix.sources.sdist.

May import: sources, gpu, cmake, knowledge, infra, workers (the paths of its files), and
each other's public names (tests/unit/test_layers.py); never pipeline, commands, cli or
report. Code that runs in another interpreter is not here: vllm_matrix.workers, run by path.
"""
