"""Optax's optimizer catalogue in gradxform: every step equals Optax 0.2.8's, in float64.

Each case runs 100 steps of gradxform and of Optax on the same problem, each run one compiled
``lax.scan``: the gradient at step ``t`` is ``(p - target) + noise_t`` (so that it depends on
the params, as the layer-wise methods need), with a fixed noise sequence. Every step's updates
and params are compared at rtol 1e-12 (atol 1e-14): both sides compute the same formulas in
float64 in orders that differ by a few roundings per step (e.g. gradxform's bias correction
``-expm1(t log b)`` against Optax's ``1 - b^t``, ``sqrt(v + eps_root c) / sqrt(c)`` against
``sqrt(v / c + eps_root)``), so a few 1e-16 per step, and the problem is contracting, so they
do not grow; a wrong formula or a missed term shows at 1e-3 or more. Cases are the options
that change the rule, not hyperparameter grids.

Adan's official rule (``numerics="official"``), which Optax does not have, is compared with
a float64 NumPy re-derivation of the authors' code written here.
"""

from __future__ import annotations

import functools
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.references import require_optax

optax = require_optax()

STEPS = 100
# A 3-D leaf (SM3 keeps one accumulator per axis) and a vector.
SHAPES = {"w": (3, 2, 2), "b": (4,)}
RTOL = 1e-12
ATOL = 1e-14


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    target = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    noise = {k: 0.3 * rng.normal(size=(STEPS, *s)) for k, s in SHAPES.items()}
    return params, target, noise


def _loss(params, target):
    return sum(0.5 * jnp.sum((params[k] - target[k]) ** 2) for k in params)


def _trajectory(tx, with_value, params, target, noise):
    """``(updates, params)`` after each of the ``STEPS`` steps of ``tx``, stacked."""

    def body(carry, n):
        p, state = carry
        g = jax.tree.map(lambda x, t, e: x - t + e, p, target, n)
        extra = {"value": _loss(p, target)} if with_value else {}
        u, state = tx.update(g, state, p, **extra)
        p = jax.tree.map(lambda x, d: x + d, p, u)
        return (p, state), (u, p)

    return jax.lax.scan(body, (params, tx.init(params)), noise)[1]


def _run_all(runs):
    """Every run of ``runs`` (``{name: (tx, with_value)}``) in one compiled program.

    XLA's compile time dominates these tests (about 1 s per scan on a loaded 2-core machine,
    whether the scans are compiled apart or together), so all the runs share one compilation,
    at XLA's lowest backend optimisation level: the float64 operations are the same IEEE ones,
    only scheduled with less effort.
    """
    params, target, noise = jax.tree.map(jnp.asarray, _problem())

    def run_all(params, noise):
        return {
            name: _trajectory(tx, with_value, params, target, noise)
            for name, (tx, with_value) in runs.items()
        }

    compiled = (
        jax.jit(run_all)
        .lower(params, noise)
        .compile(compiler_options={"xla_backend_optimization_level": 0})
    )
    return jax.device_get(compiled(params, noise))


def _run(tx, with_value=False):
    """``(updates, params)`` after each step of one transformation."""
    return _run_all({"run": (tx, with_value)})["run"]


def _decay_matrices(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


# (gradxform, optax, needs value=): factories, called inside the x64 context.
CASES = {
    "adabelief": (lambda: gx.adabelief(1e-2), lambda: optax.adabelief(1e-2)),
    "adabelief-nesterov": (
        lambda: gx.adabelief(1e-2, 0.8, 0.95, 1e-12, 1e-14, nesterov=True),
        lambda: optax.adabelief(1e-2, 0.8, 0.95, 1e-12, 1e-14, nesterov=True),
    ),
    "adan": (
        lambda: gx.adan(1e-2, weight_decay=0.1, mask=_decay_matrices),
        lambda: optax.adan(1e-2, weight_decay=0.1, mask=_decay_matrices),
    ),
    "scale_by_adan-eps_root": (
        lambda: gx.scale_by_adan(0.9, 0.8, 0.95, 1e-6, 1e-4),
        lambda: optax.scale_by_adan(0.9, 0.8, 0.95, 1e-6, 1e-4),
    ),
    "fromage": (lambda: gx.fromage(0.05), lambda: optax.fromage(0.05)),
    "fromage-min_norm": (lambda: gx.fromage(0.05, 2.0), lambda: optax.fromage(0.05, 2.0)),
    "lamb": (
        lambda: gx.lamb(1e-2, weight_decay=0.01, mask=_decay_matrices),
        lambda: optax.lamb(1e-2, weight_decay=0.01, mask=_decay_matrices),
    ),
    "lars": (lambda: gx.lars(0.1), lambda: optax.lars(0.1)),
    "lars-masks-nesterov": (
        lambda: gx.lars(0.1, 1e-2, _decay_matrices, 0.01, 1e-6, {"w": True, "b": False}, 0.8, True),
        lambda: optax.lars(
            0.1, 1e-2, _decay_matrices, 0.01, 1e-6, {"w": True, "b": False}, 0.8, True
        ),
    ),
    "noisy_sgd-key": (
        lambda: gx.noisy_sgd(1e-2, 0.1, 0.6, jax.random.key(3)),
        lambda: optax.noisy_sgd(1e-2, 0.1, 0.6, jax.random.key(3)),
    ),
    "noisy_sgd-int": (
        lambda: gx.noisy_sgd(1e-2, key=7),
        lambda: optax.noisy_sgd(1e-2, key=7),
    ),
    "novograd": (
        lambda: gx.novograd(1e-2, weight_decay=1e-3),
        lambda: optax.novograd(1e-2, weight_decay=1e-3),
    ),
    "optimistic_gradient_descent": (
        lambda: gx.optimistic_gradient_descent(0.05, 0.5, 2.0),
        lambda: optax.optimistic_gradient_descent(0.05, 0.5, 2.0),
    ),
    "optimistic_adam": (
        lambda: gx.optimistic_adam(1e-2, 2e-2),
        lambda: optax.optimistic_adam(1e-2, 2e-2),
    ),
    "optimistic_adam_v2": (
        lambda: gx.optimistic_adam_v2(1e-2, alpha=0.5, beta=2.0),
        lambda: optax.optimistic_adam_v2(1e-2, alpha=0.5, beta=2.0),
    ),
    "optimistic_adam_v2-adam": (
        lambda: gx.optimistic_adam_v2(1e-2, nesterov=False, eps_root=1e-6),
        lambda: optax.optimistic_adam_v2(1e-2, nesterov=False, eps_root=1e-6),
    ),
    "polyak_sgd": (lambda: gx.polyak_sgd(0.5), lambda: optax.polyak_sgd(0.5), True),
    # f_min above the loss's reach: the gap turns negative, which "sps+" clips to 0.
    "polyak_sgd-sps+": (
        lambda: gx.polyak_sgd(0.5, 0.5, 1.0, 1e-3, "sps+"),
        lambda: optax.polyak_sgd(0.5, 0.5, 1.0, 1e-3, "sps+"),
        True,
    ),
    "sign_sgd": (lambda: gx.sign_sgd(1e-2), lambda: optax.sign_sgd(1e-2)),
    "signum": (lambda: gx.signum(1e-2, 0.8), lambda: optax.signum(1e-2, 0.8)),
    "sm3": (lambda: gx.sm3(0.1), lambda: optax.sm3(0.1)),
    "scale_by_sm3-decay": (
        lambda: gx.scale_by_sm3(0.8, 0.95, 1e-6),
        lambda: optax.scale_by_sm3(0.8, 0.95, 1e-6),
    ),
    "yogi": (lambda: gx.yogi(1e-2), lambda: optax.yogi(1e-2)),
    "scale_by_yogi-options": (
        lambda: gx.scale_by_yogi(0.8, 0.95, 1e-4, 1e-6, 0.5),
        lambda: optax.scale_by_yogi(0.8, 0.95, 1e-4, 1e-6, 0.5),
    ),
    "scale_by_trust_ratio": (
        lambda: gx.chain(gx.scale_by_trust_ratio(0.5, 0.1, 1e-3), gx.scale_by_learning_rate(0.1)),
        lambda: optax.chain(
            optax.scale_by_trust_ratio(0.5, 0.1, 1e-3), optax.scale_by_learning_rate(0.1)
        ),
    ),
    "scale_by_param_block_norm": (
        lambda: gx.chain(gx.scale_by_param_block_norm(2.5), gx.scale_by_learning_rate(0.01)),
        lambda: optax.chain(
            optax.scale_by_param_block_norm(2.5), optax.scale_by_learning_rate(0.01)
        ),
    ),
}


@functools.cache
def _case_runs():
    """Both sides of every case, from one compilation (called under the ``x64`` fixture)."""
    runs = {}
    for case, (make_gx, make_optax, *value) in CASES.items():
        runs[(case, "gradxform")] = (make_gx(), bool(value))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # optax.optimistic_adam
            runs[(case, "optax")] = (make_optax(), bool(value))
    return _run_all(runs)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_optax_float64_every_step(x64, case):
    runs = _case_runs()
    got, want = runs[(case, "gradxform")], runs[(case, "optax")]
    chex.assert_trees_all_close(got, want, rtol=RTOL, atol=ATOL, custom_message=case)
    # The updates are not trivially zero, at the first step or the last (where "sps+" has
    # clipped the negative gap to a step of exactly 0, the regime that case is for).
    size = [max(np.max(np.abs(u[step])) for u in jax.tree.leaves(want[0])) for step in (0, -1)]
    assert size[0] > 1e-4, case
    assert size[1] == 0 if case == "polyak_sgd-sps+" else size[1] > 1e-4, case


def test_noisy_sgd_differs_between_keys_and_adds_noise(x64):
    # A test whose numbers could not tell keys apart would pass with any key handling.
    a = _run(gx.noisy_sgd(1e-2, key=1))
    b = _run(gx.noisy_sgd(1e-2, key=2))
    plain = _run(gx.chain(gx.scale_by_learning_rate(1e-2)))
    assert not np.allclose(a[0]["w"], b[0]["w"])
    assert not np.allclose(a[0]["w"], plain[0]["w"])
    # The deprecated seed= is the int key.
    chex.assert_trees_all_equal(_run(gx.noisy_sgd(1e-2, seed=1)), a)
    with pytest.raises(ValueError, match="not both"):
        gx.noisy_sgd(1e-2, key=1, seed=1)


# ----------------------------------------------------------------------------------------------
# Adan's official rule, against the authors' code re-derived in NumPy.


def _official_adan(lr, b1, b2, b3, eps, weight_decay):
    """The authors' PyTorch Adan (no_prox=False), re-derived in float64 NumPy: params after
    each step. ``b2`` weighs the gradient difference, and the decay divides the params."""
    params, target, noise = _problem()
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    n = {k: np.zeros_like(x) for k, x in p.items()}
    previous = {}
    history = []
    for t in range(1, STEPS + 1):
        for k in p:
            g = p[k] - target[k] + noise[k][t - 1]
            d = g - previous[k] if k in previous else np.zeros_like(g)
            previous[k] = g
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * d
            s = g + b2 * d
            n[k] = b3 * n[k] + (1 - b3) * s * s
            denominator = np.sqrt(n[k]) / np.sqrt(1 - b3**t) + eps
            step = (m[k] / (1 - b1**t) + b2 * v[k] / (1 - b2**t)) / denominator
            p[k] = (p[k] - lr * step) / (1 + lr * weight_decay)
        history.append({k: x.copy() for k, x in p.items()})
    return {k: np.stack([h[k] for h in history]) for k in p}


def test_adan_official_numerics_match_the_authors_code(x64):
    lr, b1, b2, b3, eps = 2e-2, 0.9, 0.8, 0.95, 1e-8
    runs = {}
    for weight_decay in (0.0, 0.05):
        for numerics in ("official", "optax"):
            opt = gx.adan(lr, b1, b2, b3, eps, 0.0, weight_decay, numerics=numerics)
            runs[(weight_decay, numerics)] = (opt, False)
    got = _run_all(runs)
    for weight_decay in (0.0, 0.05):
        want = _official_adan(lr, b1, b2, b3, eps, weight_decay)
        chex.assert_trees_all_close(got[(weight_decay, "official")][1], want, rtol=RTOL, atol=ATOL)
        # Optax's rule is another optimizer here: the comparison can tell them apart.
        assert not np.allclose(got[(weight_decay, "optax")][1]["w"], want["w"], rtol=1e-6)
