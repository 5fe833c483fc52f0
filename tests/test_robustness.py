"""Property tests: every optimizer, any tree, any valid hyperparameters.

Hypothesis draws parameter trees (nested dicts, lists and tuples, empty containers, ``None``
leaves, scalars, size-0 arrays, float32/bfloat16/float16 leaves) with finite gradients, and
hyperparameters from each optimizer's valid ranges. Every optimizer must then run ``init``,
two ``update`` s and ``apply_updates`` without error, give finite updates, state and params,
keep each param's dtype, and keep its state's dtypes (so a jitted step never recompiles).
Hyperparameters drawn from outside the valid ranges must raise ``ValueError`` naming the
argument, in the factory, before any array is touched.

Steps run eagerly: the trees are tiny, and one jit per drawn tree would cost a compilation
per example where eager dispatch reuses each primitive's compiled kernel across examples.
"""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from optimizer_table import FACTORIES, NEEDS_LOSS_BY_NAME, assert_covers_every_optimizer

import gradxform as gx

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FLOAT_DTYPES = (np.float32, ml_dtypes.bfloat16, np.float16)


# --- trees ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LeafSpec:
    """What one leaf will be (a plain dataclass, so JAX sees it as a leaf of the spec tree)."""

    shape: tuple
    dtype: type
    # log10 of the gradient's magnitude: tiny values exercise underflow in float16 and
    # bfloat16 moments, large ones their range. Gradients are bounded by 10^exponent <= 100,
    # so that the sum of two |g|^2 (Adagrad's accumulator) fits float16 (max 65504): second
    # moments are kept in the param's dtype, and a float16 Adam with |g| > 256 overflows its
    # `nu` by design.
    grad_exponent: int
    seed: int


leaf_specs = st.builds(
    LeafSpec,
    shape=st.lists(st.integers(0, 3), max_size=2).map(tuple),
    dtype=st.sampled_from(FLOAT_DTYPES),
    grad_exponent=st.sampled_from([-6, -3, 0, 2]),
    seed=st.integers(0, 2**16),
)


def _containers(children):
    return st.one_of(
        st.dictionaries(st.sampled_from("abcd"), children, max_size=3),
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
    )


# A whole tree of ``None`` is left out: ``update(..., params=None)`` means "no params given",
# which the weight-decay transformations rightly refuse. ``None`` inside a tree is drawn.
tree_specs = st.recursive(st.one_of(leaf_specs, st.none()), _containers, max_leaves=6).filter(
    lambda spec: spec is not None
)


def _build(spec, kind):
    """Params (``kind="params"``) or the gradient of step ``kind`` (an int), from a spec."""

    def leaf(s):
        offset = 0 if kind == "params" else 1 + kind
        rng = np.random.default_rng(s.seed + 7919 * offset)
        if kind == "params":
            values = np.asarray(rng.standard_normal(s.shape))
        else:
            values = np.asarray(rng.uniform(-1.0, 1.0, s.shape))
            values = np.asarray(values * 10.0**s.grad_exponent)
            values[rng.random(s.shape) < 0.2] = 0.0  # exact zeros: the 0/0 cases
        return jnp.asarray(values.astype(s.dtype))

    return jax.tree.map(leaf, spec)


def _all_finite(tree):
    return all(bool(np.all(np.isfinite(np.asarray(x, np.float32)))) for x in jax.tree.leaves(tree))


def _dtypes(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


# --- hyperparameters ------------------------------------------------------------------------------


def _number(lo, hi):
    """A valid number in [lo, hi], as a Python float or a NumPy scalar (both are static)."""
    value = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return st.one_of(value, value.map(np.float32), value.map(np.float64))


rate = _number(0.0, 1.0)
unit = _number(0.0, 0.999)
eps = st.one_of(st.just(0.0), _number(1e-12, 1e-3))
decay = _number(0.0, 0.1)
mu_dtype = st.sampled_from([None, jnp.float32, jnp.bfloat16])


@st.composite
def sgd_kwargs(draw):
    momentum = draw(st.one_of(st.just(0.0), _number(0.0, 0.99)))
    dampening = draw(st.one_of(st.just(0.0), _number(0.0, 1.0)))
    nesterov = float(momentum) > 0 and float(dampening) == 0 and draw(st.booleans())
    return {
        "learning_rate": draw(rate),
        "momentum": momentum,
        "dampening": dampening,
        "nesterov": nesterov,
        "weight_decay": draw(decay),
    }


def _adam_like(**extra):
    return st.fixed_dictionaries(
        {"learning_rate": rate, "b1": unit, "b2": unit, "eps": eps, "weight_decay": decay},
        optional=extra,
    )


# Valid ranges per optimizer of the table (``tests/optimizer_table.py``), by name.
VALID = {
    "sgd": sgd_kwargs(),
    "adagrad": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "lr_decay": _number(0.0, 1.0),
            "weight_decay": decay,
            "initial_accumulator_value": _number(0.0, 1.0),
            "eps": eps,
        }
    ),
    "rmsprop": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "decay": unit,
            "eps": eps,
            "weight_decay": decay,
            "momentum": _number(0.0, 0.99),
            "centered": st.booleans(),
        }
    ),
    "adam": _adam_like(amsgrad=st.booleans(), eps_root=eps, mu_dtype=mu_dtype),
    "amsgrad": _adam_like(eps_root=eps, mu_dtype=mu_dtype),
    "adamw": _adam_like(amsgrad=st.booleans(), eps_root=eps, mu_dtype=mu_dtype),
    "adamax": _adam_like(),
    "nadam": _adam_like(momentum_decay=_number(0.0, 0.1), decoupled_weight_decay=st.booleans()),
    "sparse_adam": st.fixed_dictionaries(
        {"learning_rate": rate, "b1": unit, "b2": unit, "eps": eps},
        optional={"maximize": st.booleans()},
    ),
    "lion": st.fixed_dictionaries(
        {"learning_rate": rate, "b1": unit, "b2": unit, "weight_decay": decay},
        optional={"mu_dtype": mu_dtype},
    ),
    "radam": _adam_like(decoupled_weight_decay=st.booleans()),
    "nadamw": _adam_like(eps_root=eps, mu_dtype=mu_dtype),
    "adamaxw": _adam_like(),
    "adadelta": st.fixed_dictionaries(
        {"learning_rate": rate, "rho": _number(0.0, 1.0), "eps": eps, "weight_decay": decay}
    ),
    # Steps are at most max_step_size <= 100, which float16 params hold.
    "rprop": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "etas": st.tuples(_number(0.01, 0.99), _number(1.01, 3.0)),
            "step_sizes": st.tuples(_number(0.0, 1e-4), _number(1e-3, 100.0)),
        }
    ),
    "asgd": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "lambd": _number(0.0, 0.1),
            "alpha": _number(0.0, 1.0),
            "t0": _number(0.0, 10.0),
            "weight_decay": decay,
        }
    ),
    "adafactor": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "beta2_decay": _number(-2.0, 0.0),
            "eps": st.tuples(st.one_of(st.none(), eps), st.one_of(st.just(0.0), _number(0.0, 1.0))),
            "d": _number(1.0, 10.0),
            "weight_decay": decay,
            "maximize": st.booleans(),
        }
    ),
    # Muon on the matrices (2-D leaves, empty ones included), AdamW on the rest. AdamW's eps
    # stays >= 1e-2: the float16 bound of the test below is keyed on `eps`, which is Muon's here.
    "shampoo": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "momentum": unit,
            "weight_decay": decay,
            "weight_decouple": st.booleans(),
            "fixed_decay": st.booleans(),
            "preconditioning_compute_steps": st.integers(1, 3),
            "matrix_eps": _number(1e-6, 1.0),
            "block_size": st.one_of(st.none(), st.integers(1, 3)),
        }
    ),
    "muon_with_adamw": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "weight_decay": decay,
            "momentum": unit,
            "nesterov": st.booleans(),
            "eps": eps,
            "ns_steps": st.integers(0, 6),
            "adjust_lr_fn": st.sampled_from([None, "original", "match_rms_adamw"]),
            "ns_dtype": st.sampled_from([jnp.dtype(jnp.bfloat16), None]),
            "adamw_b1": unit,
            "adamw_b2": unit,
            "adamw_eps": _number(1e-2, 1e-1),
            "adamw_weight_decay": decay,
        },
        optional={"adamw_learning_rate": rate},
    ),
    "soap": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "b1": unit,
            "b2": unit,
            "shampoo_beta": st.one_of(st.just(-1.0), unit),
            "eps": eps,
            "weight_decay": decay,
            "precondition_frequency": st.integers(1, 4),
            "max_precond_dim": st.integers(1, 4),
            "merge_dims": st.booleans(),
            "precondition_1d": st.booleans(),
            "normalize_grads": st.booleans(),
            "correct_bias": st.booleans(),
            "block_size": st.one_of(st.none(), st.integers(1, 3)),
        }
    ),
    "lbfgs": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "max_iter": st.integers(1, 20),
            "tolerance_grad": _number(0.0, 1e-3),
            "tolerance_change": _number(0.0, 1e-3),
            "history_size": st.integers(1, 10),
            "line_search_fn": st.sampled_from([None, "strong_wolfe"]),
        },
        optional={"max_eval": st.integers(1, 30)},
    ),
    # optax.contrib's optimizers (tests/test_optax_contrib.py). Their eps stays positive: with
    # eps = 0 and a zero gradient DoG's and DoWG's rate is r / 0 (NaN on a zero gradient, as in
    # Optax), and an eps of 0 leaves AdEMAMix's slow moment, ADOPT's unclipped ratio and
    # ACProp's centred moment unbounded. A positive eps >= 1e-8 bounds every step by
    # |g| / eps <= 1e10, which float32 and bfloat16 hold (float16 needs eps >= 1e-2, see below).
    # GaLore: eps stays positive, as Adam's would be needed to bound |m| / (sqrt(v) + eps) on a
    # zero projected gradient; rank 1 projects the table's matrices below their rank.
    "galore_adamw": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "b1": unit,
            "b2": unit,
            "eps": _number(1e-8, 1e-3),
            "weight_decay": decay,
            "rank": st.integers(1, 4),
            "update_proj_gap": st.integers(1, 5),
            "scale": _number(0.0, 1.0),
            "proj_type": st.sampled_from(["std", "reverse_std", "left", "right", "full"]),
        }
    ),
    "galore": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "rank": st.integers(1, 4),
            "update_proj_gap": st.integers(1, 5),
            "scale": _number(0.0, 1.0),
            "weight_decay": decay,
        }
    ),
    "dog": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "init_step": st.tuples(
                st.sampled_from(["heuristic", "distance", "learning_rate"]), _number(0.0, 1e-2)
            ),
            "eps": _number(1e-8, 1e-2),
        },
        optional={"weight_decay": st.one_of(st.none(), decay)},
    ),
    "dowg": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "init_estim_sq_dist": st.one_of(st.none(), _number(0.0, 1.0)),
            "eps": _number(1e-8, 1e-2),
        },
        optional={"weight_decay": st.one_of(st.none(), decay)},
    ),
    # Schedule-free: b1 (momentum) in (0, 1), as eval divides by it. AdamW's eps may be 0 as
    # Adam's: it has no first moment, and g / sqrt(v_hat) <= 1 / sqrt(1 - b2) where v > 0.
    "schedule_free_sgd": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "warmup_steps": st.integers(0, 3),
            "momentum": _number(1e-3, 0.999),
            "weight_decay": decay,
        }
    ),
    "schedule_free_adamw": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "warmup_steps": st.integers(0, 3),
            "b1": _number(1e-3, 0.999),
            "b2": unit,
            "eps": eps,
            "weight_decay": decay,
            "weight_lr_power": _number(0.0, 4.0),
            "r": _number(0.0, 2.0),
        }
    ),
    "cocob": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "alpha": _number(1.0, 1000.0),
            "eps": _number(1e-8, 1e-2),
            "weight_decay": decay,
        }
    ),
    "ademamix": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "b1": unit,
            "b2": unit,
            "b3": unit,
            "alpha": _number(0.0, 10.0),
            "eps": _number(1e-8, 1e-2),
            "eps_root": eps,
            "weight_decay": decay,
        },
        optional={"mu_dtype": mu_dtype},
    ),
    "simplified_ademamix": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "b1": unit,
            "b2": unit,
            "alpha": _number(0.0, 10.0),
            "eps": _number(1e-8, 1e-2),
            "eps_root": eps,
            "weight_decay": decay,
        }
    ),
    "adopt": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "b1": unit,
            "b2": unit,
            "eps": _number(1e-8, 1e-2),
            "nesterov": st.booleans(),
            "use_clipping": st.booleans(),
        },
        optional={"mu_dtype": mu_dtype},
    ),
    "acprop": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "b1": unit,
            "b2": unit,
            "eps": _number(1e-8, 1e-2),
            "eps_root": eps,
            "weight_decay": decay,
        }
    ),
    "madgrad": st.fixed_dictionaries(
        {"learning_rate": rate, "momentum": _number(0.0, 1.0), "weight_decay": decay, "eps": eps}
    ),
    # MoMo's update needs the loss (skipped by the runs below, which have none).
    "momo": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "beta": unit,
            "lower_bound": _number(-10.0, 0.0),
            "weight_decay": decay,
            "adapt_lower_bound": st.booleans(),
        }
    ),
    # Sophia's update runs without a Hessian estimate (its average stays 0: sign steps).
    "sophia": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "b1": unit,
            "b2": unit,
            "rho": _number(0.0, 1.0),
            "weight_decay": decay,
            "hessian_update_interval": st.integers(1, 20),
        },
        optional={"maximize": st.booleans()},
    ),
    "momo_adam": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "b1": unit,
            "b2": unit,
            "eps": _number(1e-8, 1e-2),
            "lower_bound": _number(-10.0, 0.0),
            "weight_decay": decay,
            "adapt_lower_bound": st.booleans(),
        }
    ),
    # Optax's catalogue. eps >= 1e-3 where it bounds a preconditioned step for float16 params
    # (the float16 assumption below is keyed on `eps`).
    "adabelief": st.fixed_dictionaries(
        {"learning_rate": rate, "b1": unit, "b2": unit, "eps": eps, "eps_root": eps},
        optional={"nesterov": st.booleans()},
    ),
    "adan": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "b1": unit,
            "b2": unit,
            "b3": unit,
            "eps": eps,
            "eps_root": eps,
            "weight_decay": decay,
        },
        optional={"numerics": st.sampled_from(["optax", "official"])},
    ),
    "yogi": st.fixed_dictionaries({"learning_rate": rate, "b1": unit, "b2": unit, "eps": eps}),
    "optimistic_adam": st.fixed_dictionaries(
        {"learning_rate": rate, "b1": unit, "b2": unit, "eps": eps},
        optional={"optimism": _number(0.0, 1.0), "nesterov": st.booleans()},
    ),
    "optimistic_adam_v2": st.fixed_dictionaries(
        {"learning_rate": rate, "b1": unit, "b2": unit, "eps": eps},
        optional={
            "alpha": _number(0.0, 2.0),
            "beta": _number(0.0, 2.0),
            "nesterov": st.booleans(),
        },
    ),
    "optimistic_gradient_descent": st.fixed_dictionaries(
        {"learning_rate": rate, "alpha": _number(0.0, 2.0), "beta": _number(0.0, 2.0)}
    ),
    "polyak_sgd": st.fixed_dictionaries(
        {"max_learning_rate": rate, "scaling": rate, "f_min": _number(-1.0, 1.0), "eps": eps}
    ),
    "sm3": st.fixed_dictionaries({"learning_rate": rate, "momentum": unit}),
    "noisy_sgd": st.fixed_dictionaries(
        {"learning_rate": rate, "eta": _number(0.0, 1.0), "gamma": _number(0.0, 1.0)},
        optional={"key": st.integers(0, 2**31 - 1)},
    ),
    # The authors' learning-rate-free Adams: d0 > 0, growth_rate >= 1 or inf.
    "prodigy": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "b1": unit,
            "b2": unit,
            "eps": _number(1e-8, 1e-2),
            "weight_decay": decay,
            "d0": _number(1e-8, 1e-3),
            "d_coef": _number(0.1, 10.0),
            "growth_rate": st.one_of(st.just(math.inf), _number(1.0, 2.0)),
        },
        optional={
            "beta3": st.one_of(st.none(), unit),
            "safeguard_warmup": st.booleans(),
            "use_bias_correction": st.booleans(),
        },
    ),
    "dadapt_adamw": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "b1": unit,
            "b2": unit,
            "eps": _number(1e-8, 1e-2),
            "weight_decay": decay,
            "d0": _number(1e-8, 1e-3),
            "growth_rate": st.one_of(st.just(math.inf), _number(1.0, 2.0)),
        },
        optional={"use_bias_correction": st.booleans()},
    ),
    "sign_sgd": st.fixed_dictionaries({"learning_rate": rate}),
    "signum": st.fixed_dictionaries({"learning_rate": rate, "beta": _number(0.0, 1.0)}),
    "novograd": st.fixed_dictionaries(
        {"learning_rate": rate, "b1": unit, "b2": unit, "eps": eps, "weight_decay": decay}
    ),
    "lamb": st.fixed_dictionaries(
        {"learning_rate": rate, "b1": unit, "b2": unit, "eps": eps, "weight_decay": decay}
    ),
    "lars": st.fixed_dictionaries(
        {
            "learning_rate": rate,
            "weight_decay": decay,
            "trust_coefficient": _number(0.0, 1.0),
            "eps": eps,
            # > 0: gradxform's trace refuses Nesterov without momentum.
            "momentum": _number(0.01, 0.99),
            "nesterov": st.booleans(),
        },
        optional={"trust_ratio_mask": st.booleans()},
    ),
    "fromage": st.fixed_dictionaries({"learning_rate": rate, "min_norm": _number(0.0, 1.0)}),
}

# L-BFGS's update evaluates the loss itself (``value_and_grad_fn``), and the gradients drawn
# here belong to no loss: the two tests that run updates on them skip it (the first saying
# so, the second, which draws the optimizer, by leaving it out of the draw).
# tests/test_lbfgs.py draws VALID["lbfgs"] on a loss, and runs L-BFGS on any tree and inside
# apply_if_finite.
GRADIENTS_ONLY = sorted(set(FACTORIES) - NEEDS_LOSS_BY_NAME)


def test_valid_and_invalid_hyperparameters_are_given_for_every_optimizer_of_the_table():
    assert_covers_every_optimizer(VALID, "VALID")
    assert_covers_every_optimizer(INVALID, "INVALID")


@pytest.mark.parametrize("name", sorted(FACTORIES))
@SETTINGS
@given(data=st.data())
def test_optimizer_runs_on_any_tree_with_finite_results(name, data):
    if name in NEEDS_LOSS_BY_NAME:
        pytest.skip(f"{name}: its update needs the loss, and these gradients belong to none")
    factory = FACTORIES[name]
    kwargs = data.draw(VALID[name], label="hyperparameters")
    # A scalar eps bounds a preconditioned step (the assumptions below). Adafactor's pair
    # (eps1, eps2) does not need them: its update is clipped to an RMS of d, and its state
    # holds means of |g|^2 (<= 1e4 here, which float16 holds).
    eps = None if isinstance(kwargs.get("eps"), tuple) else kwargs.get("eps")
    if eps is not None and float(eps) == 0.0:
        # Without eps, Adam's step m_hat / sqrt(v_hat) (Adamax's m_hat / u) is bounded only when
        # the first moment forgets no slower than the second: b1 < sqrt(b2) (Kingma & Ba 2015,
        # section 2.1; b1 <= b2 for Adamax). Otherwise a zero gradient after a non-zero one
        # gives an exact step of any size, e.g. 4.5e13 with b1 = 0.5, b2 = 5e-29, which no
        # float16 param can hold. Condition b1 <= b2 implies both bounds.
        assume(float(kwargs.get("b1", 0.9)) <= float(kwargs.get("b2", 0.999)))
    spec = data.draw(tree_specs, label="tree")
    if eps is not None and any(leaf.dtype == np.float16 for leaf in jax.tree.leaves(spec)):
        # float16 state holds at most 65504. A preconditioned step is bounded by |g| / eps
        # (centered RMSProp with no spread, or Adam's m / (sqrt(v) + eps)), and gradients here
        # reach 100, so a float16 buffer (state follows the params) can hold every exact value
        # only for eps >= 100 / 65504; eps >= 1e-2 leaves room for momentum over two steps.
        # Below that an inf state is float16's correct answer, as in torch.
        assume(float(eps) >= 1e-2)
    params = _build(spec, "params")
    param_dtypes = _dtypes(params)
    opt = factory(**kwargs)

    state = opt.init(params)
    state_dtypes = _dtypes(state)
    for step in range(2):
        grads = _build(spec, step)
        updates, state = opt.update(grads, state, params)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        assert _dtypes(state) == state_dtypes, "the state's dtypes changed: jit would recompile"
        params = gx.apply_updates(params, updates)
        assert _dtypes(params) == param_dtypes
        assert _all_finite(updates), (kwargs, updates)
        assert _all_finite(state), (kwargs, state)
        assert _all_finite(params), (kwargs, params)


# --- invalid hyperparameters ----------------------------------------------------------------------

negative = st.one_of(
    st.floats(max_value=-1e-12, allow_nan=False),  # includes -inf
    st.just(math.nan),
    st.floats(-1e3, -1e-12).map(np.float32),
)
outside_unit = st.one_of(
    st.floats(max_value=-1e-12, allow_nan=False),
    st.floats(min_value=1.0, allow_nan=False),  # includes 1.0 and +inf
    st.just(math.nan),
    st.floats(1.0, 10.0).map(np.float64),
)
# Adadelta's rho may be 1; Rprop's eta_minus may be neither 0 nor 1.
outside_closed_unit = st.one_of(
    st.floats(max_value=-1e-12, allow_nan=False),
    st.floats(min_value=1.0, exclude_min=True, allow_nan=False),
    st.just(math.nan),
)
outside_open_unit = st.one_of(
    st.floats(max_value=0.0, allow_nan=False),
    st.floats(min_value=1.0, allow_nan=False),
    st.just(math.nan),
)

positive_or_nan = st.one_of(
    st.floats(min_value=1e-12, allow_nan=False),  # includes +inf
    st.just(math.nan),
    st.floats(1e-3, 10.0).map(np.float32),
)
below_one = st.one_of(
    st.floats(max_value=0.999, allow_nan=False),  # includes -inf
    st.just(math.nan),
    st.just(math.inf),
)

non_positive = st.one_of(negative, st.just(0.0))
# growth_rate may be inf (no limit).
below_one_finite = st.one_of(st.floats(max_value=0.999, allow_nan=False), st.just(math.nan))

_ADAM_INVALID = {
    "learning_rate": negative,
    "b1": outside_unit,
    "b2": outside_unit,
    "eps": negative,
    "weight_decay": negative,
}
# Per optimizer of the table, by name: arguments that make a valid call, and the strategy of
# invalid values for each argument.
INVALID = {
    "sgd": ({"learning_rate": 0.1}, {
        "learning_rate": negative, "momentum": negative, "dampening": negative,
        "weight_decay": negative,
    }),
    "adagrad": ({}, {
        "learning_rate": negative, "lr_decay": negative, "weight_decay": negative,
        "initial_accumulator_value": negative, "eps": negative,
    }),
    "rmsprop": ({}, {
        "learning_rate": negative, "decay": outside_unit, "eps": negative,
        "weight_decay": negative, "momentum": negative,
    }),
    "adam": ({}, {**_ADAM_INVALID, "eps_root": negative}),
    "amsgrad": ({}, {**_ADAM_INVALID, "eps_root": negative}),
    "adamw": ({}, {**_ADAM_INVALID, "eps_root": negative}),
    "adamax": ({}, _ADAM_INVALID),
    "nadam": ({}, {**_ADAM_INVALID, "momentum_decay": negative}),
    "sparse_adam": ({}, {
        "learning_rate": negative, "b1": outside_unit, "b2": outside_unit, "eps": negative,
    }),
    "lion": ({}, {
        "learning_rate": negative, "b1": outside_unit, "b2": outside_unit,
        "weight_decay": negative,
    }),
    "radam": ({}, _ADAM_INVALID),
    "nadamw": ({}, {**_ADAM_INVALID, "eps_root": negative}),
    "adamaxw": ({}, _ADAM_INVALID),
    "adadelta": ({}, {
        "learning_rate": negative, "rho": outside_closed_unit, "eps": negative,
        "weight_decay": negative,
    }),
    "rprop": ({}, {
        "learning_rate": negative,
        "etas": st.one_of(
            st.tuples(outside_open_unit, st.just(1.2)),
            st.tuples(st.just(0.5), st.one_of(st.floats(max_value=1.0), st.just(math.nan))),
        ),
        "step_sizes": st.one_of(
            st.tuples(negative, st.just(50.0)),
            st.tuples(st.just(1e-6), negative),
            st.tuples(st.floats(1.0, 10.0), st.floats(0.0, 0.5)),  # min > max
        ),
    }),
    "asgd": ({}, {
        "learning_rate": negative, "lambd": negative, "alpha": negative, "t0": negative,
        "weight_decay": negative,
    }),
    "adafactor": ({}, {
        "learning_rate": negative, "beta2_decay": positive_or_nan, "d": below_one,
        "weight_decay": negative,
        "eps": st.one_of(
            st.tuples(st.one_of(st.none(), st.just(1e-3)), negative),
            st.tuples(negative, st.just(1e-3)),
        ),
    }),
    "shampoo": ({}, {
        "learning_rate": negative, "momentum": outside_unit, "weight_decay": negative,
        "matrix_eps": negative, "preconditioning_compute_steps": st.integers(max_value=0),
        "block_size": st.integers(max_value=0),
    }),
    "muon_with_adamw": ({}, {
        "learning_rate": negative, "weight_decay": negative, "momentum": outside_unit,
        "eps": negative, "adamw_learning_rate": negative, "adamw_b1": outside_unit,
        "adamw_b2": outside_unit, "adamw_eps": negative, "adamw_weight_decay": negative,
    }),
    "soap": ({}, {
        "learning_rate": negative, "b1": outside_unit, "b2": outside_unit,
        "shampoo_beta": st.one_of(st.floats(min_value=1.0), st.just(math.nan)), "eps": negative,
        "weight_decay": negative, "precondition_frequency": st.integers(max_value=0),
        "max_precond_dim": st.integers(max_value=0), "block_size": st.integers(max_value=0),
    }),
    "lbfgs": ({}, {
        "learning_rate": negative, "tolerance_grad": negative, "tolerance_change": negative,
        "max_iter": st.integers(max_value=0), "max_eval": st.integers(max_value=0),
        "history_size": st.integers(max_value=0),
    }),
    "galore_adamw": ({"learning_rate": 0.1}, {
        "learning_rate": negative, "b1": outside_unit, "b2": outside_unit, "eps": negative,
        "weight_decay": negative, "rank": st.integers(max_value=0),
        "update_proj_gap": st.integers(max_value=0),
    }),
    "galore": ({"learning_rate": 0.1}, {
        "learning_rate": negative, "weight_decay": negative, "rank": st.integers(max_value=0),
        "update_proj_gap": st.integers(max_value=0),
    }),
    "dog": ({}, {"learning_rate": negative, "eps": negative, "weight_decay": negative}),
    "dowg": ({}, {
        "learning_rate": negative, "eps": negative, "weight_decay": negative,
        "init_estim_sq_dist": negative,
    }),
    "schedule_free_sgd": ({"learning_rate": 0.1}, {
        "learning_rate": negative, "warmup_steps": st.integers(max_value=-1),
        "momentum": outside_open_unit, "weight_decay": negative,
    }),
    "schedule_free_adamw": ({"learning_rate": 0.1}, {
        "learning_rate": negative, "warmup_steps": st.integers(max_value=-1),
        "b1": outside_open_unit, "b2": outside_unit, "eps": negative, "weight_decay": negative,
        "weight_lr_power": negative, "r": negative,
    }),
    "cocob": ({}, {
        "learning_rate": negative, "alpha": st.one_of(negative, st.just(0.0)), "eps": negative,
        "weight_decay": negative,
    }),
    "ademamix": ({"learning_rate": 1e-3}, {
        **_ADAM_INVALID, "b3": outside_unit, "eps_root": negative, "alpha": st.just(math.nan),
    }),
    "simplified_ademamix": ({"learning_rate": 1e-3}, {
        **_ADAM_INVALID, "eps_root": negative, "alpha": st.just(math.inf),
    }),
    "adopt": ({"learning_rate": 1e-3}, {
        "learning_rate": negative, "b1": outside_unit, "b2": outside_unit, "eps": negative,
    }),
    "acprop": ({"learning_rate": 1e-3}, {**_ADAM_INVALID, "eps_root": negative}),
    "madgrad": ({"learning_rate": 1e-3}, {
        "learning_rate": negative, "momentum": outside_closed_unit, "weight_decay": negative,
        "eps": negative,
    }),
    "momo": ({}, {
        "learning_rate": negative, "beta": outside_unit, "weight_decay": negative,
        "lower_bound": st.just(math.nan),
    }),
    "sophia": ({"learning_rate": 1e-3}, {
        "learning_rate": negative, "b1": outside_unit, "b2": outside_unit, "rho": negative,
        "weight_decay": negative,
    }),
    "momo_adam": ({}, {
        "learning_rate": negative, "b1": outside_unit, "b2": outside_unit, "eps": negative,
        "weight_decay": negative, "lower_bound": st.just(math.nan),
    }),
    "adabelief": ({"learning_rate": 0.1}, {
        "learning_rate": negative, "b1": outside_unit, "b2": outside_unit, "eps": negative,
        "eps_root": negative,
    }),
    "adan": ({"learning_rate": 0.1}, {
        **_ADAM_INVALID, "b3": outside_unit, "eps_root": negative,
    }),
    "yogi": ({"learning_rate": 0.1}, {
        "learning_rate": negative, "b1": outside_unit, "b2": outside_unit, "eps": negative,
    }),
    "optimistic_adam": ({"learning_rate": 0.1}, {
        "learning_rate": negative, "b1": outside_unit, "b2": outside_unit, "eps": negative,
        "eps_root": negative,
    }),
    "optimistic_adam_v2": ({"learning_rate": 0.1}, {
        "learning_rate": negative, "b1": outside_unit, "b2": outside_unit, "eps": negative,
        "eps_root": negative,
    }),
    "optimistic_gradient_descent": ({"learning_rate": 0.1}, {"learning_rate": negative}),
    "polyak_sgd": ({}, {
        "max_learning_rate": negative, "scaling": negative, "eps": negative,
    }),
    "sm3": ({"learning_rate": 0.1}, {"learning_rate": negative, "momentum": outside_unit}),
    "noisy_sgd": ({"learning_rate": 0.1}, {"learning_rate": negative, "eta": negative}),
    "sign_sgd": ({"learning_rate": 0.1}, {"learning_rate": negative}),
    "signum": ({"learning_rate": 0.1}, {
        "learning_rate": negative, "beta": outside_closed_unit,
    }),
    "novograd": ({"learning_rate": 0.1}, {**_ADAM_INVALID, "eps_root": negative}),
    "lamb": ({"learning_rate": 0.1}, {**_ADAM_INVALID, "eps_root": negative}),
    "lars": ({"learning_rate": 0.1}, {
        "learning_rate": negative, "weight_decay": negative, "eps": negative,
        "momentum": negative,
    }),
    "fromage": ({"learning_rate": 0.1}, {"learning_rate": negative, "min_norm": negative}),
    "prodigy": ({}, {
        **_ADAM_INVALID, "beta3": outside_unit, "d0": non_positive, "d_coef": non_positive,
        "growth_rate": below_one_finite,
    }),
    "dadapt_adamw": ({}, {
        **_ADAM_INVALID, "d0": non_positive, "growth_rate": below_one_finite,
    }),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FACTORIES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_invalid_hyperparameters_raise_at_construction(name, data):
    factory = FACTORIES[name]
    base, invalid = INVALID[name]
    key = data.draw(st.sampled_from(sorted(invalid)), label="argument")
    value = data.draw(invalid[key], label="value")
    with pytest.raises(ValueError, match=f"`{key}`"):
        factory(**{**base, key: value})


@SETTINGS
@given(
    momentum=st.one_of(st.just(0.0), st.just(0), st.floats(0.01, 0.99)),
    dampening=st.one_of(st.just(0.0), st.floats(0.01, 1.0)),
)
def test_nesterov_without_momentum_or_with_dampening_raises(momentum, dampening):
    if momentum > 0 and dampening == 0:
        gx.sgd(0.1, momentum=momentum, dampening=dampening, nesterov=True)  # the valid case
        return
    with pytest.raises(ValueError, match="Nesterov"):
        gx.sgd(0.1, momentum=momentum, dampening=dampening, nesterov=True)


# --- the guards around any optimizer --------------------------------------------------------------


def _poison_first_element(tree):
    """``tree`` with the first element of its first non-empty leaf made NaN, or ``None`` if it
    has no element at all."""
    leaves, treedef = jax.tree.flatten(tree)
    for i, leaf in enumerate(leaves):
        if leaf.size:
            leaves[i] = leaf.reshape(-1).at[0].set(jnp.nan).reshape(leaf.shape)
            return jax.tree.unflatten(treedef, leaves)
    return None


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_guards_around_any_optimizer_and_tree(data):
    name = data.draw(st.sampled_from(GRADIENTS_ONLY), label="optimizer")
    factory = FACTORIES[name]
    kwargs = data.draw(VALID[name], label="hyperparameters")
    spec = data.draw(tree_specs, label="tree")
    params = _build(spec, "params")
    plain = factory(**kwargs)
    guarded = gx.apply_if_finite(factory(**kwargs), max_consecutive_errors=1)
    scaled = gx.dynamic_loss_scale(factory(**kwargs), initial_scale=4.0, period=1)

    grads = _build(spec, 0)
    # Finite gradients: apply_if_finite is the plain optimizer, bitwise. (chex compares
    # bfloat16 values as float32, so its strict mode would not tell the two dtypes apart:
    # dtypes are compared on their own first, here and below.)
    p_updates, p_state = plain.update(grads, plain.init(params), params)
    g_updates, g_state = guarded.update(grads, guarded.init(params), params)
    chex.assert_trees_all_equal_shapes_and_dtypes(g_updates, p_updates)
    chex.assert_trees_all_equal(g_updates, p_updates, strict=True)
    chex.assert_trees_all_equal_shapes_and_dtypes(g_state.inner_state, p_state)
    chex.assert_trees_all_equal(g_state.inner_state, p_state, strict=True)
    # dynamic_loss_scale takes gradients times the scale (4, exact) and grows it (period 1).
    s_state = scaled.init(params)
    s_signature = _dtypes(s_state)
    s_updates, s_state = scaled.update(jax.tree.map(lambda g: g * 4, grads), s_state, params)
    assert _all_finite(s_updates) and _dtypes(s_state) == s_signature
    assert float(s_state.loss_scale) == 8.0
    assert _dtypes(gx.apply_updates(params, s_updates)) == _dtypes(params)

    # A NaN anywhere: zero updates, inner state unchanged, scale halved.
    poisoned = _poison_first_element(grads)
    if poisoned is None:
        return
    updates, state = guarded.update(poisoned, g_state, params)
    assert all(not np.any(np.asarray(u, np.float32)) for u in jax.tree.leaves(updates))
    chex.assert_trees_all_equal_shapes_and_dtypes(state.inner_state, g_state.inner_state)
    chex.assert_trees_all_equal(state.inner_state, g_state.inner_state, strict=True)
    updates, new_s_state = scaled.update(poisoned, s_state, params)
    assert all(not np.any(np.asarray(u, np.float32)) for u in jax.tree.leaves(updates))
    chex.assert_trees_all_equal_shapes_and_dtypes(new_s_state.inner_state, s_state.inner_state)
    chex.assert_trees_all_equal(new_s_state.inner_state, s_state.inner_state, strict=True)
    assert float(new_s_state.loss_scale) == 4.0
