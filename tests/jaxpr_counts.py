"""Counting a traced program's equations, sub-jaxprs (loop bodies, cond branches) included.

The matrix optimizers' tests (``test_stacking``, ``test_soap``, ``test_shampoo``,
``test_galore``) check how many decompositions a program holds, and where: imported as a
sibling module (``from jaxpr_counts import count``), as ``references`` is.
"""

from __future__ import annotations

from collections.abc import Collection

import jax


def count(jaxpr, names: str | Collection[str], *, into_cond: bool = True) -> int:
    """Equations of the primitives ``names`` in ``jaxpr`` and in its sub-jaxprs (a loop body
    once), not those within a ``cond``'s branches unless ``into_cond``."""
    names = {names} if isinstance(names, str) else set(names)
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn.primitive.name in names
        if eqn.primitive.name == "cond" and not into_cond:
            continue
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += count(sub, names, into_cond=into_cond)
    return total


def count_in_conds(jaxpr, names: str | Collection[str]) -> int:
    """How many of those equations lie within the branches of a ``cond``."""
    return count(jaxpr, names) - count(jaxpr, names, into_cond=False)
