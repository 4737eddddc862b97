"""A small CMake interpreter: lexer, conditions, values, and the evaluation of a tree.

May import: knowledge, infra.
"""
