"""The logic of the studies and benchmarks under ``benchmarks/``: what their scripts compute
and render (the comparisons, the tables), kept here so that it is typed, linted and tested
like the rest; the scripts keep only running things and their ``main()``.

May import: every layer below the CLI (pipeline, stages, sources, report, knowledge,
infra); nothing in the package imports it (import-linter: a top layer beside ``cli``).
"""
