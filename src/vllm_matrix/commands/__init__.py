"""The commands beyond ``run``, one module each (doctor, newest, pixi snippet, CI matrix,
currency, target options): what cli.py dispatches to after parsing.

May import: pipeline, stages, sources, report, gpu, cmake, knowledge, infra (everything
below cli).
"""
