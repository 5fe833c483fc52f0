"""Every public name of Optax's optimizer, transformation, schedule, tree-utility and contrib
namespaces is in gradxform, or in the short table of deliberate omissions below with its reason.

The test reads the names from the installed Optax, so a name Optax adds later fails here until it
is provided or listed. Signatures and numbers are compared elsewhere (``test_validate``'s
positional-parameter test, ``test_optax_*``); this test is the index.
"""

from __future__ import annotations

import types

import pytest
from references import require_optax

import gradxform as gx

optax = require_optax()

_LOSS = "a loss function, not a gradient transformation: out of scope (Optax's optax.losses)"
_FRONTIER = (
    "a frontier optimizer that gradxform follows from its authors' reference code, not from "
    "Optax's contrib version (the frontier-optimizers issue; Optax's numbers differ there)"
)

# name -> why gradxform does not provide it. Keep it short: everything else is provided.
OMITTED = {
    # Losses and their helpers (optax.losses re-exported at the top level).
    **dict.fromkeys(
        [
            "convex_kl_divergence",
            "cosine_distance",
            "cosine_similarity",
            "ctc_loss",
            "ctc_loss_with_forward_probs",
            "generalized_kl_divergence",
            "hinge_loss",
            "huber_loss",
            "kl_divergence",
            "l2_loss",
            "log_cosh",
            "ntxent",
            "safe_softmax_cross_entropy",
            "sigmoid_binary_cross_entropy",
            "sigmoid_focal_loss",
            "smooth_labels",
            "softmax_cross_entropy",
            "softmax_cross_entropy_with_integer_labels",
            "squared_error",
        ],
        _LOSS,
    ),
    "matrix_inverse_pth_root": "a linear-algebra routine (Optax's Shampoo internals), not a "
    "transformation: out of scope",
    "power_iteration": "a linear-algebra routine, not a transformation: out of scope",
    "multi_normal": "a random-distribution helper, not a transformation: out of scope",
    "nnls": "a non-negative least-squares solver, not a transformation: out of scope",
    # Optax's contrib versions of the frontier optimizers.
    **dict.fromkeys(
        [
            "DAdaptAdamWState",
            "ProdigyState",
            "SophiaState",
        ],
        _FRONTIER,
    ),
    "GaLoreDimensionNumbers": "gradxform's galore and scale_by_galore project 2-D leaves only "
    "(weight_dimension_numbers must be None; `projected` selects the leaves)",
    "MuonDimensionNumbers": "gradxform's muon follows torch.optim.Muon (matrices chosen by "
    "muon_labels, not by Optax's dimension numbers); its state is ScaleByMuonState",
    "MuonState": "gradxform's muon follows torch.optim.Muon; its state is ScaleByMuonState",
}

NAMESPACES = {
    "optax": (optax, gx),
    "optax.transforms": (optax.transforms, gx),
    "optax.schedules": (optax.schedules, gx),
    "optax.tree_utils": (optax.tree_utils, gx.tree_utils),
    "optax.contrib": (optax.contrib, gx),
}


def _public_names(namespace) -> list[str]:
    return sorted(
        name
        for name in dir(namespace)
        if not name.startswith("_") and not isinstance(getattr(namespace, name), types.ModuleType)
    )


@pytest.mark.parametrize("label", NAMESPACES)
def test_every_optax_name_is_provided_or_omitted_with_a_reason(label):
    namespace, ours = NAMESPACES[label]
    missing = [
        name for name in _public_names(namespace) if not hasattr(ours, name) and name not in OMITTED
    ]
    assert not missing, f"{label}: neither in gradxform nor in OMITTED: {missing}"


def test_the_omissions_are_neither_provided_nor_stale():
    everywhere = {name for namespace, _ in NAMESPACES.values() for name in _public_names(namespace)}
    assert not [name for name in OMITTED if name not in everywhere], "omitted names Optax lacks"
    assert not [name for name in OMITTED if hasattr(gx, name)], "omitted names gradxform provides"


def test_what_is_provided_is_public():
    """A provided name is in ``__all__`` (so ``from gradxform import *`` and the docs see it)."""
    for label, (namespace, ours) in NAMESPACES.items():
        hidden = [
            name
            for name in _public_names(namespace)
            if hasattr(ours, name) and name not in ours.__all__
        ]
        assert not hidden, f"{label}: provided but not in __all__: {hidden}"
