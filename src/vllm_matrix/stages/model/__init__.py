"""The model stage (PLAN's ``model``): an installed vLLM serves a tiny ModelOpt FP8
checkpoint made here, judged against its bf16 twin.

Modules: ``modelstage`` (the stage: runs the worker, judges its JSON), ``modelcheck`` (the
judgement of two runs' greedy outputs, no torch), ``tinymodel`` (the checkpoint, made with
torch). May import: the layers below the stages, and other stages' public names.
"""
