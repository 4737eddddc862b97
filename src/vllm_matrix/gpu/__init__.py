"""The GPUs of this machine and their driver (``info``: nvidia-smi, /proc), for targets
and the gpu and model stages.

May import: knowledge, infra.
"""
