"""Reports rendered from result files: compat.md/json, blackwell.md, map.md/html/json/png,
the README tables, the merge of result directories, the browser view.

May import: infra only (it reads results, never a stage, a source, the pipeline or the
knowledge: import-linter's second contract).
"""
