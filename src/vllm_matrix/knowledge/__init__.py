"""What the tool knows, as data: one loader per data file (toolchains, pins, classify,
probe_units, buildenv, builds, gpus); ``data/*.toml`` (each fact with its source) and
``patches/`` are package data.

May import: infra only.
"""
