"""The bottom layer: the one subprocess wrapper (proc), the cache, config, errors, the
package index, results, the Arch type, host facts, apt and .deb handling, the programs
registry, progress, portable paths.

May import: nothing of vllm_matrix (import-linter's third contract).
"""
