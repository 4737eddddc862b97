"""The pipeline: ``plan.py``'s PLAN (the ordered stages, what each needs and makes, the
depths), the cell's context, the runner that walks the plan, probe reuse, the [grid] and
the map of releases, the advice and the build-cost estimate fed by a cell.

May import: stages, sources, report, gpu, cmake, knowledge, infra; never commands or cli.
"""
