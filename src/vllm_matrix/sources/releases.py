"""Each release's torch pin, for every release on the list (knowledge.pins.releases()).

The committed data/vllm_pins.toml holds the releases that existed when it was generated;
a release published since (one the index lists and the file lacks) is still judged: its
pin is read from its own sdist (facts.read_facts), once per process. A release whose
sdist cannot be had now is left out of the map of pins (it has none to suggest).
"""

from __future__ import annotations

from functools import cache

from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.knowledge import pins
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import facts as facts_mod


@cache
def pin_from_sdist(version: str) -> str | None:
    """The torch pin read from the release's own sdist; None when unreadable or absent."""
    try:
        tree = source.sdist_tree(version)
        return facts_mod.read_facts(tree.root, tree.version).torch
    except MatrixError:
        return None


def pinned() -> dict[str, str]:
    """release -> torch pin: the committed file, completed from the sdists of the releases
    on the list that it lacks."""
    out = dict(pins.load())
    for v in pins.releases():
        if v not in out:
            pin = pin_from_sdist(v)
            if pin:
                out[v] = pin
    return out


__all__ = ["pin_from_sdist", "pinned"]
