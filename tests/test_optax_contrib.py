"""The optimizers of ``optax.contrib`` against Optax 0.2.8 itself, in float64.

Both libraries take 100 steps on the same problem, each a ``lax.scan``, the two in one compiled
program per case, and the updates and params are compared at every step with ``rtol=1e-12,
atol=1e-14``. The problem
is a quadratic with per-step noise, ``f_t(x) = sum(a x^2 / 2 + (b + n_t) x)``, so that the
gradient depends on the params (DoG, COCOB, MADGRAD, MoMo, Mechanic and SAM read the params or
the loss) and changes every step. The formulas are written in another order in places
(``1 - b^t`` as ``-expm1(t log b)``, ``sqrt(v / c)`` as ``sqrt(v) / sqrt(c)``), which costs a
few ulps per step; over 100 steps that stays far below 1e-12 relative, and the ``atol`` (~45
ulps of 1.0) covers elements near zero, whose rounding error is at the scale of their O(1)
operands.

Cases differ by the options that change the rule (weight decay, schedules, Nesterov, clipping,
initial steps, adapted lower bounds, SAM's modes), not by every hyperparameter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import require_optax

import gradxform as gx

optax = require_optax()
contrib = optax.contrib

STEPS = 100
RTOL = 1e-12
ATOL = 1e-14
SHAPES = {"w": (3, 4), "b": (4,)}


def _problem(seed=0):
    """Initial params, the quadratic's ``a`` (in [0.5, 1.5]) and ``b``, and per-step noise."""
    rng = np.random.default_rng(seed)
    params = {k: jnp.asarray(rng.normal(size=s)) for k, s in SHAPES.items()}
    a = {k: jnp.asarray(rng.uniform(0.5, 1.5, size=s)) for k, s in SHAPES.items()}
    b = {k: jnp.asarray(rng.normal(size=s)) for k, s in SHAPES.items()}
    noise = {k: jnp.asarray(0.3 * rng.normal(size=(STEPS, *s))) for k, s in SHAPES.items()}
    return params, a, b, noise


def _loss(params, a, b, n):
    terms = jax.tree.map(
        lambda x, a_, b_, n_: jnp.sum(a_ * x * x / 2 + (b_ + n_) * x), params, a, b, n
    )
    return sum(jax.tree.leaves(terms))


def _history(opt, apply_updates, extra, params, a, b, noise):
    """``(updates, params)`` after each of the 100 steps, stacked: one ``lax.scan``."""

    def body(carry, n):
        params, state = carry
        value, grads = jax.value_and_grad(_loss)(params, a, b, n)
        kwargs = extra(value, lambda p: jax.grad(_loss)(p, a, b, n))
        updates, state = opt.update(grads, state, params, **kwargs)
        params = apply_updates(params, updates)
        return (params, state), (updates, params)

    return jax.lax.scan(body, (params, opt.init(params)), noise)[1]


def _run_both(ours, theirs, extra):
    """Both libraries' histories from one compiled program (one compile per case, not two);
    the two scans share nothing but the problem's arrays."""
    run = jax.jit(
        lambda *problem: (
            _history(ours, gx.apply_updates, extra, *problem),
            _history(theirs, optax.apply_updates, extra, *problem),
        )
    )
    return jax.tree.map(np.asarray, run(*_problem()))


def _none(value, grad):
    return {}


def _value(value, grad):
    return {"value": value}


def _grad_fn(value, grad):
    return {"grad_fn": lambda params, i: grad(params)}


def _obj_fn(value, grad):
    # A loss whose Hessian depends on the params, for Hutchinson's estimator.
    return {"obj_fn": lambda params: sum(jnp.sum(jnp.cos(x)) for x in jax.tree.leaves(params))}


def _linear(start, end, steps=50):
    """A schedule written here, in float64, for both libraries (their own schedule functions
    compute in different dtypes, which is not what these tests compare)."""
    return lambda count: start + (end - start) * jnp.minimum(count, steps) / steps


# id: (gradxform factory, optax factory, extra update arguments). Factories are called inside
# the x64 context.
CASES = {
    "scale_by_distance_over_gradients-f32-start": (
        lambda: gx.scale_by_distance_over_gradients(1e-3, global_scale=-0.5),
        lambda: optax.scale_by_distance_over_gradients(1e-3, global_scale=-0.5),
        _none,
    ),
    "dog": (lambda: gx.dog(), lambda: contrib.dog(), _none),
    "dog-learning_rate-decay": (
        lambda: gx.dog(0.5, ("learning_rate", 1e-2), weight_decay=1e-2),
        lambda: contrib.dog(0.5, ("learning_rate", 1e-2), weight_decay=1e-2),
        _none,
    ),
    "dowg-start-decay": (
        lambda: gx.dowg(0.5, 1e-2, weight_decay=1e-2),
        lambda: contrib.dowg(0.5, 1e-2, weight_decay=1e-2),
        _none,
    ),
    "ademamix-schedules": (
        lambda: gx.ademamix(1e-2, 0.8, 0.95, _linear(0.999, 0.99), _linear(0.0, 5.0, 50),
                            1e-6, 1e-8, weight_decay=1e-2),
        lambda: contrib.ademamix(1e-2, 0.8, 0.95, _linear(0.999, 0.99),
                                 _linear(0.0, 5.0, 50), 1e-6, 1e-8,
                                 weight_decay=1e-2),
        _none,
    ),
    "simplified_ademamix-alpha-decay": (
        lambda: gx.simplified_ademamix(1e-3, 0.9, 0.99, _linear(0.0, 2.0, 50),
                                       1e-6, 1e-8, 1e-2),
        lambda: contrib.simplified_ademamix(1e-3, 0.9, 0.99, _linear(0.0, 2.0, 50),
                                            1e-6, 1e-8, 1e-2),
        _none,
    ),
    "adopt-nesterov": (
        lambda: gx.adopt(1e-2, 0.8, 0.99, nesterov=True),
        lambda: contrib.adopt(1e-2, 0.8, 0.99, nesterov=True),
        _none,
    ),
    "adopt-no-clipping": (
        lambda: gx.adopt(1e-2, use_clipping=False),
        lambda: contrib.adopt(1e-2, use_clipping=False),
        _none,
    ),
    "acprop-decay": (
        lambda: gx.acprop(1e-2, 0.8, 0.95, 1e-8, 1e-12, 1e-2),
        lambda: contrib.acprop(1e-2, 0.8, 0.95, 1e-8, 1e-12, 1e-2),
        _none,
    ),
    "cocob-rate-decay": (
        lambda: gx.cocob(0.5, 50.0, 1e-6, 1e-2),
        lambda: contrib.cocob(0.5, 50.0, 1e-6, 1e-2),
        _none,
    ),
    "madgrad-schedule-decay": (
        lambda: gx.madgrad(_linear(1e-2, 1e-3, 50), 0.5, 1e-2),
        lambda: contrib.madgrad(_linear(1e-2, 1e-3, 50), 0.5, 1e-2),
        _none,
    ),
    "momo": (lambda: gx.momo(0.1), lambda: contrib.momo(0.1), _value),
    "momo-adapt-decay": (
        lambda: gx.momo(0.1, 0.8, -10.0, 1e-2, True),
        lambda: contrib.momo(0.1, 0.8, -10.0, 1e-2, True),
        _value,
    ),
    "momo_adam": (lambda: gx.momo_adam(), lambda: contrib.momo_adam(), _value),
    "momo_adam-adapt-decay": (
        lambda: gx.momo_adam(1e-2, 0.8, 0.99, 1e-8, -10.0, 1e-2, True),
        lambda: contrib.momo_adam(1e-2, 0.8, 0.99, 1e-8, -10.0, 1e-2, True),
        _value,
    ),
    "mechanize": (
        lambda: gx.mechanize(gx.adam(1e-2)),
        lambda: contrib.mechanize(optax.adam(1e-2)),
        _none,
    ),
    "sam": (
        lambda: gx.sam(gx.sgd(0.1), gx.chain(gx.normalize(), gx.scale(0.05))),
        lambda: contrib.sam(optax.sgd(0.1), optax.chain(contrib.normalize(), optax.scale(0.05))),
        _none,
    ),
    "sam-stateful-no-reset": (
        lambda: gx.sam(gx.adam(1e-2), gx.chain(gx.normalize(), gx.trace(0.5), gx.scale(0.05)),
                       3, False),
        lambda: contrib.sam(optax.adam(1e-2),
                            optax.chain(contrib.normalize(), optax.trace(0.5), optax.scale(0.05)),
                            3, False),
        _none,
    ),
    "sam-opaque": (
        lambda: gx.sam(gx.adam(1e-2), gx.chain(gx.normalize(), gx.trace(0.5), gx.scale(0.05)),
                       3, opaque_mode=True),
        lambda: contrib.sam(optax.adam(1e-2),
                            optax.chain(contrib.normalize(), optax.trace(0.5), optax.scale(0.05)),
                            3, opaque_mode=True),
        _grad_fn,
    ),
    # The same key gives the same Rademacher signs: Optax's splits, one key per leaf.
    "hutchinson_estimator_diag_hessian": (
        lambda: gx.chain(gx.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(3)),
                         gx.scale(-0.1)),
        lambda: optax.chain(contrib.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(3)),
                            optax.scale(-0.1)),
        _obj_fn,
    ),
}  # fmt: skip


# Mechanic's update is the difference of two O(1) trees, ``x_0 - S * Delta`` and ``x_t``, fed
# back through its learned scale ``S`` (a product of ratios of running sums): the ulps of each
# step (of 1.0, the params' scale) are amplified from step to step. Measured over the 100 steps:
# 9e-13 with Optax's own adam as the base optimizer on both sides, 1.1e-12 with gradxform's;
# its updates and params are compared with an absolute tolerance of 1e-11 (rtol elsewhere).
CASE_ATOL = {"mechanize": 1e-11}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_optax_contrib_float64(x64, case):
    ours, theirs, extra = CASES[case]
    got, expected = _run_both(ours(), theirs(), extra)
    atol = CASE_ATOL.get(case, ATOL)
    for i, what in enumerate(("updates", "params")):
        for key in SHAPES:
            g, e = got[i][key], expected[i][key]
            assert g.shape == e.shape == (STEPS, *SHAPES[key]), (what, key, g.shape, e.shape)
            # assert_allclose's own test (|g - e| <= atol + rtol |e|, NaNs equal where both
            # are), on every step at once; the first step that fails is reported by it.
            close = np.isclose(g, e, rtol=RTOL, atol=atol, equal_nan=True)
            if not close.all():
                step = int(np.argwhere(~close)[0][0])
                np.testing.assert_allclose(
                    g[step], e[step], rtol=RTOL, atol=atol,
                    err_msg=f"{case}: {what}[{key!r}] at step {step + 1}",
                )  # fmt: skip
                raise AssertionError(f"{case}: {what}[{key!r}] at step {step + 1}")
