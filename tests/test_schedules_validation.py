"""Schedules: every argument checked when the schedule is built, and Optax's positional order.

The rules (STYLE.md, "Validation" and "Arguments"): a wrong kind of value raises ``TypeError``,
a value out of range ``ValueError``, both naming the function, the argument and the value; a
parameter is positional only where Optax's function of the same name has the same parameter
in the same place (only the first where Optax has no such function).
"""

from __future__ import annotations

import inspect
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.references import require_optax

MAX = 2**53  # the largest step argument


def _whole(low: int) -> str:
    return re.escape(f"must be a whole number in [{low}, {MAX}]")


# ----------------------------------------------------------------------------------------------
# Relations between arguments, and single cases written out.

INVALID = [
    (
        lambda: gx.linear_schedule(1.0, 0.0, 0),
        ValueError,
        f"linear_schedule: `transition_steps` {_whole(1)}, got 0",
    ),
    (
        lambda: gx.linear_schedule(1.0, 0.0, 10, -1),
        ValueError,
        f"linear_schedule: `transition_begin` {_whole(0)}, got -1",
    ),
    (
        lambda: gx.linear_schedule(1.0, 0.0, 2.5),
        TypeError,
        f"linear_schedule: `transition_steps` {_whole(1)}, got 2.5",
    ),
    (
        lambda: gx.polynomial_schedule(1.0, 0.0, 0.0, 10),
        ValueError,
        "polynomial_schedule: `power` must be a finite number > 0, got 0.0",
    ),
    (
        lambda: gx.polynomial_schedule(1.0, 0.0, 1.0, -3),
        ValueError,
        "polynomial_schedule: `transition_steps`.*-3",
    ),
    (
        lambda: gx.exponential_decay(1.0, 0, 0.5),
        ValueError,
        f"exponential_decay: `transition_steps` {_whole(1)}, got 0",
    ),
    (
        lambda: gx.exponential_decay(1.0, 10, 0.0),
        ValueError,
        "exponential_decay: `decay_rate` must be a finite number > 0, got 0.0",
    ),
    (
        lambda: gx.inverse_time_decay(1.0, decay_rate=0.5, decay_steps=0),
        ValueError,
        f"inverse_time_decay: `decay_steps` {_whole(1)}, got 0",
    ),
    (
        lambda: gx.inverse_time_decay(1.0, decay_rate=-0.5),
        ValueError,
        "inverse_time_decay: `decay_rate` must be a finite number >= 0, got -0.5",
    ),
    (
        lambda: gx.cosine_decay_schedule(1.0, 0),
        ValueError,
        f"cosine_decay_schedule: `decay_steps` {_whole(1)}, got 0",
    ),
    (
        lambda: gx.cosine_decay_schedule(1.0, 10, exponent=0),
        ValueError,
        "cosine_decay_schedule: `exponent` must be a finite number > 0, got 0",
    ),
    (
        lambda: gx.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10),
        ValueError,
        "`decay_steps` must be greater than `warmup_steps` \\(10\\).*got 10",
    ),
    (
        lambda: gx.warmup_cosine_decay_schedule(0.0, 1.0, -1, 10),
        ValueError,
        f"warmup_cosine_decay_schedule: `warmup_steps` {_whole(0)}, got -1",
    ),
    (
        lambda: gx.warmup_exponential_decay_schedule(0.0, 1.0, 5, 0, 0.5),
        ValueError,
        "warmup_exponential_decay_schedule: `transition_steps` must be a whole number",
    ),
    (
        lambda: gx.piecewise_constant_schedule(1.0, {-5: 0.1}),
        ValueError,
        f"piecewise_constant_schedule: `boundaries_and_scales` {_whole(0)}, got -5",
    ),
    (
        lambda: gx.piecewise_constant_schedule(1.0, {5: -0.1}),
        ValueError,
        "`boundaries_and_scales\\[5\\]` must be a finite number >= 0, got -0.1",
    ),
    (lambda: gx.piecewise_constant_schedule(1.0, [(5, 0.1)]), TypeError, "must be a dict"),
    (
        lambda: gx.piecewise_interpolate_schedule("quadratic", 1.0, {5: 0.1}),
        ValueError,
        "piecewise_interpolate_schedule: `interpolate_type` must be one of 'linear', 'cosine', "
        "got 'quadratic'",
    ),
    (
        lambda: gx.piecewise_interpolate_schedule("linear", 1.0, {-1: 0.1}),
        ValueError,
        f"`boundaries_and_scales` {_whole(0)}, got -1",
    ),
    (
        lambda: gx.cosine_onecycle_schedule(0, 1.0),
        ValueError,
        f"cosine_onecycle_schedule: `transition_steps` {_whole(1)}, got 0",
    ),
    (
        lambda: gx.cosine_onecycle_schedule(100, 1.0, 1.0),
        ValueError,
        "cosine_onecycle_schedule: `pct_start`.*got 1.0",
    ),
    (
        lambda: gx.linear_onecycle_schedule(100, 1.0, 0.0),
        ValueError,
        "linear_onecycle_schedule: `pct_start`.*got 0.0",
    ),
    (
        lambda: gx.cosine_onecycle_schedule(100, 1.0, div_factor=0.0),
        ValueError,
        "cosine_onecycle_schedule: `div_factor` must be a finite number > 0",
    ),
    (
        lambda: gx.cosine_annealing_warm_restarts(1.0, t_0=0),
        ValueError,
        f"cosine_annealing_warm_restarts: `t_0` {_whole(1)}, got 0",
    ),
    (
        lambda: gx.cosine_annealing_warm_restarts(1.0, t_0=5, t_mult=0),
        ValueError,
        f"cosine_annealing_warm_restarts: `t_mult` {_whole(1)}, got 0",
    ),
    (
        lambda: gx.cosine_annealing_warm_restarts(1.0, t_0=5, t_mult=1.5),
        TypeError,
        "cosine_annealing_warm_restarts: `t_mult` must be a whole",
    ),
    (
        lambda: gx.cyclic_schedule(0.0, max_value=1.0, step_size_up=0),
        ValueError,
        f"cyclic_schedule: `step_size_up` {_whole(1)}, got 0",
    ),
    (
        lambda: gx.cyclic_schedule(0.0, max_value=1.0, step_size_up=5, step_size_down=-1),
        ValueError,
        f"cyclic_schedule: `step_size_down` {_whole(0)}, got -1",
    ),
    (
        lambda: gx.cyclic_schedule(0.0, max_value=1.0, step_size_up=5, mode="sawtooth"),
        ValueError,
        "cyclic_schedule: `mode` must be one of .*got 'sawtooth'",
    ),
    (
        lambda: gx.cyclic_schedule(0.0, max_value=1.0, step_size_up=5, mode="exp_range", gamma=0.0),
        ValueError,
        "cyclic_schedule: `gamma` must be a finite number > 0",
    ),
    (
        lambda: gx.join_schedules([gx.constant_schedule(1.0)] * 3, [10]),
        ValueError,
        "`boundaries` must have len\\(schedules\\) - 1 = 2 entries, got 1",
    ),
    (
        lambda: gx.join_schedules([gx.constant_schedule(1.0)] * 3, [10, 10]),
        ValueError,
        "`boundaries` must be strictly increasing, got \\[10, 10\\]",
    ),
    (
        lambda: gx.join_schedules([gx.constant_schedule(1.0)] * 2, [-4]),
        ValueError,
        f"join_schedules: `boundaries\\[0\\]` {_whole(0)}, got -4",
    ),
    (
        lambda: gx.join_schedules([gx.constant_schedule(1.0), 0.1], [4]),
        TypeError,
        "join_schedules: `schedules\\[1\\]` must be a function, got 0.1",
    ),
    (lambda: gx.sgdr_schedule([]), ValueError, "at least one cycle"),
    (
        lambda: gx.sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=5)]),
        TypeError,
        "sgdr_schedule: `cosine_kwargs\\[0\\]` must be a dict .* `decay_steps`",
    ),
    (
        lambda: gx.sgdr_schedule(
            [
                dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=20),
                dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=5),
            ]
        ),
        ValueError,
        "sgdr_schedule: `cosine_kwargs\\[1\\]`: .*`decay_steps` must be greater",
    ),
]


@pytest.mark.parametrize(("build", "error", "message"), INVALID)
def test_invalid_arguments_raise_at_construction(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_integral_floats_are_accepted_as_step_counts():
    # 1e3 is a common way to write a step count; it must mean 1000 steps.
    got = jax.jit(gx.linear_schedule(1.0, 0.0, 1e3))(jnp.asarray([0, 500, 1000], jnp.int32))
    np.testing.assert_allclose(got, [1.0, 0.5, 0.0])


# ----------------------------------------------------------------------------------------------
# Every argument of every schedule, against every wrong kind and range of value.

# What a bad value is, per kind of argument: (value, exception, how the message shows it).
FINITE_BAD = [
    (None, TypeError, "None"),
    ("0.1", TypeError, "'0.1'"),
    (True, TypeError, "True"),
    (np.bool_(False), TypeError, "False"),
    (1 + 2j, TypeError, "(1+2j)"),
    (jnp.ones(2), TypeError, "shape (2,)"),
    (np.ones((1,)), TypeError, "shape (1,)"),
    (math.nan, ValueError, "nan"),
    (math.inf, ValueError, "inf"),
    (-math.inf, ValueError, "-inf"),
    (jnp.asarray(math.nan), ValueError, "nan"),
]
STEPS_BAD = [
    (None, TypeError, "None"),
    ("10", TypeError, "'10'"),
    (True, TypeError, "True"),
    (2.5, TypeError, "2.5"),
    (jnp.asarray(10), TypeError, "shape ()"),
    (-1, ValueError, "-1"),
    (MAX + 1, ValueError, str(MAX + 1)),
    (1e16, ValueError, "1e+16"),
    (math.inf, ValueError, "inf"),
    (math.nan, ValueError, "nan"),
]
BAD = {
    "finite": FINITE_BAD,
    "optional finite": FINITE_BAD[1:],
    "positive": [*FINITE_BAD, (0.0, ValueError, "0.0"), (-1.0, ValueError, "-1.0")],
    "non-negative": [*FINITE_BAD, (-0.5, ValueError, "-0.5")],
    "steps": [*STEPS_BAD, (0, ValueError, "got 0")],
    "steps from 0": STEPS_BAD,
    "optional steps from 0": STEPS_BAD[1:],
    "bool": [(1, TypeError, "1"), (None, TypeError, "None"), ("yes", TypeError, "'yes'")],
    "choice": [("bogus", ValueError, "'bogus'"), (None, ValueError, "None")],
    "static fraction": [
        (0.0, ValueError, "0.0"),
        (1.0, ValueError, "1.0"),
        (math.nan, ValueError, "nan"),
        (None, TypeError, "None"),
        ("0.3", TypeError, "'0.3'"),
        (True, TypeError, "True"),
        (jnp.ones(2), TypeError, "shape (2,)"),
    ],
    # Optax's pct_final: None (torch's schedule) or a fraction in [pct_start, 1].
    "optional fraction": [
        (-0.5, ValueError, "-0.5"),
        (1.5, ValueError, "1.5"),
        (0.1, ValueError, "0.1"),  # below pct_start
        (math.nan, ValueError, "nan"),
        ("0.85", TypeError, "'0.85'"),
        (True, TypeError, "True"),
        (jnp.ones(2), TypeError, "shape (2,)"),
    ],
    "scales": [
        ([(5, 0.1)], TypeError, "[(5, 0.1)]"),
        ("x", TypeError, "'x'"),
        ({2.5: 0.1}, TypeError, "2.5"),
        ({-5: 0.1}, ValueError, "-5"),
        ({MAX + 1: 0.1}, ValueError, str(MAX + 1)),
        ({5: -0.1}, ValueError, "-0.1"),
        ({5: math.nan}, ValueError, "nan"),
        ({5: math.inf}, ValueError, "inf"),
        ({5: None}, TypeError, "None"),
        ({5: "0.1"}, TypeError, "'0.1'"),
        ({5: True}, TypeError, "True"),
        ({5: jnp.ones(2)}, TypeError, "shape (2,)"),
    ],
    "cycles": [
        (None, TypeError, "None"),
        (3, TypeError, "3"),
        ({"decay_steps": 5}, TypeError, "{'decay_steps': 5}"),
        ([], ValueError, "[]"),
        ([5], TypeError, "5"),
        ([dict(init_value=0.0, peak_value=1.0, warmup_steps=1)], TypeError, "'warmup_steps'"),
        (
            [dict(init_value=0.0, peak_value=math.nan, warmup_steps=1, decay_steps=5)],
            ValueError,
            "nan",
        ),
        (
            [dict(init_value=None, peak_value=1.0, warmup_steps=1, decay_steps=5)],
            TypeError,
            "None",
        ),
        ([dict(init_value=0.0, peak_value=1.0, warmup_steps=1, decay_steps=2.5)], TypeError, "2.5"),
        (  # each cycle within 2**53, but not their sum
            [dict(init_value=0.0, peak_value=1.0, warmup_steps=0, decay_steps=MAX)] * 2,
            ValueError,
            str(2 * MAX),
        ),
    ],
    "schedules": [
        (None, TypeError, "None"),
        ([], ValueError, "[]"),
        ([gx.constant_schedule(1.0), 0.1], TypeError, "0.1"),
        ([gx.constant_schedule(1.0), None], TypeError, "None"),
    ],
    "function": [
        (None, TypeError, "None"),
        (0.9, TypeError, "0.9"),
        ("lambda k: 0.9", TypeError, "'lambda k: 0.9'"),
        (jnp.ones(()), TypeError, "shape ()"),
    ],
    "boundaries": [
        (None, TypeError, "None"),
        ([2.5], TypeError, "2.5"),
        (["5"], TypeError, "'5'"),
        ([True], TypeError, "True"),
        ([-1], ValueError, "-1"),
        ([MAX + 1], ValueError, str(MAX + 1)),
    ],
}

# Per public schedule: valid keyword arguments, and the kind of each argument.
CYCLE = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10)
SPECS = {
    "constant_schedule": dict(value=(0.3, "finite")),
    "linear_schedule": dict(
        init_value=(1.0, "finite"),
        end_value=(0.1, "finite"),
        transition_steps=(10, "steps"),
        transition_begin=(2, "steps from 0"),
    ),
    "polynomial_schedule": dict(
        init_value=(1.0, "finite"),
        end_value=(0.1, "finite"),
        power=(2.0, "positive"),
        transition_steps=(10, "steps"),
        transition_begin=(2, "steps from 0"),
    ),
    "exponential_decay": dict(
        init_value=(1.0, "finite"),
        transition_steps=(3, "steps"),
        decay_rate=(0.5, "positive"),
        transition_begin=(1, "steps from 0"),
        staircase=(False, "bool"),
        end_value=(0.2, "optional finite"),
    ),
    "inverse_time_decay": dict(
        init_value=(1.0, "finite"),
        decay_rate=(0.5, "non-negative"),
        decay_steps=(2, "steps"),
        staircase=(True, "bool"),
    ),
    "piecewise_constant_schedule": dict(
        init_value=(1.0, "finite"), boundaries_and_scales=({2: 0.5, 5: 0.1}, "scales")
    ),
    "piecewise_interpolate_schedule": dict(
        interpolate_type=("cosine", "choice"),
        init_value=(1.0, "finite"),
        boundaries_and_scales=({2: 0.5, 5: 0.1}, "scales"),
    ),
    "cosine_decay_schedule": dict(
        init_value=(1.0, "finite"),
        decay_steps=(10, "steps"),
        alpha=(0.1, "finite"),
        exponent=(2.0, "positive"),
    ),
    "warmup_constant_schedule": dict(
        init_value=(0.0, "finite"),
        peak_value=(1.0, "finite"),
        warmup_steps=(4, "steps from 0"),
    ),
    "warmup_cosine_decay_schedule": dict(
        init_value=(0.0, "finite"),
        peak_value=(1.0, "finite"),
        warmup_steps=(2, "steps from 0"),
        decay_steps=(10, "steps"),
        end_value=(0.1, "finite"),
        exponent=(2.0, "positive"),
    ),
    "warmup_exponential_decay_schedule": dict(
        init_value=(0.0, "finite"),
        peak_value=(1.0, "finite"),
        warmup_steps=(2, "steps from 0"),
        transition_steps=(3, "steps"),
        decay_rate=(0.5, "positive"),
        transition_begin=(1, "steps from 0"),
        staircase=(False, "bool"),
        end_value=(0.2, "optional finite"),
    ),
    "cosine_onecycle_schedule": dict(
        transition_steps=(20, "steps"),
        peak_value=(1.0, "finite"),
        pct_start=(0.3, "static fraction"),
        div_factor=(10.0, "positive"),
        final_div_factor=(100.0, "positive"),
        three_phase=(True, "bool"),
    ),
    "linear_onecycle_schedule": dict(
        transition_steps=(20, "steps"),
        peak_value=(1.0, "finite"),
        pct_start=(0.3, "static fraction"),
        pct_final=(None, "optional fraction"),
        div_factor=(10.0, "positive"),
        final_div_factor=(100.0, "positive"),
        three_phase=(True, "bool"),
    ),
    "cosine_annealing_warm_restarts": dict(
        init_value=(1.0, "finite"),
        t_0=(3, "steps"),
        t_mult=(2, "steps"),
        eta_min=(0.1, "finite"),
    ),
    "sgdr_schedule": dict(cosine_kwargs=([CYCLE, {**CYCLE, "peak_value": 0.5}], "cycles")),
    "cyclic_schedule": dict(
        base_value=(0.1, "finite"),
        max_value=(1.0, "finite"),
        step_size_up=(3, "steps"),
        step_size_down=(2, "optional steps from 0"),
        mode=("exp_range", "choice"),
        gamma=(0.9, "positive"),
    ),
    "join_schedules": dict(
        schedules=([gx.constant_schedule(1.0), gx.constant_schedule(0.5)], "schedules"),
        boundaries=([4], "boundaries"),
    ),
    "chained_schedule": dict(
        init_value=(1.0, "finite"),
        schedules=(
            [gx.linear_schedule(0.5, 1.0, 4), gx.exponential_decay(1.0, 1, 0.9)],
            "schedules",
        ),
    ),
    "multiplicative_schedule": dict(
        init_value=(1.0, "finite"), factor_fn=(lambda k: 1.0 - 0.5 / (k + 1), "function")
    ),
    "cosine_annealing_schedule": dict(
        init_value=(1.0, "finite"), t_max=(5, "steps"), eta_min=(0.1, "finite")
    ),
    "swalr_schedule": dict(
        init_value=(1.0, "finite"),
        swa_lr=(0.2, "finite"),
        anneal_steps=(6, "steps from 0"),
        anneal_strategy=("linear", "choice"),
    ),
}
VALUE_KINDS = ("finite", "optional finite", "positive", "non-negative")


def _valid(name: str) -> dict:
    return {arg: value for arg, (value, _) in SPECS[name].items()}


def _cases():
    for name, spec in SPECS.items():
        for arg, (_, kind) in spec.items():
            for i, (bad, error, shown) in enumerate(BAD[kind]):
                yield pytest.param(name, arg, bad, error, shown, id=f"{name}-{arg}-{i}")


def test_every_schedule_and_argument_is_in_the_table():
    assert set(SPECS) == set(gx.schedules.__all__)
    for name, spec in SPECS.items():
        assert list(spec) == list(inspect.signature(getattr(gx, name)).parameters), name


@pytest.mark.parametrize("name", SPECS)
def test_the_valid_arguments_build_a_varying_schedule(name):
    # The cases below change one argument of these; they must build, or a failure proves nothing.
    values = np.asarray(getattr(gx, name)(**_valid(name))(jnp.arange(12)))
    assert np.all(np.isfinite(values))
    assert len(set(values.tolist())) > 1 or name == "constant_schedule"


@pytest.mark.parametrize(("name", "arg", "bad", "error", "shown"), list(_cases()))
def test_bad_argument_raises_naming_function_argument_and_value(name, arg, bad, error, shown):
    with pytest.raises(error) as caught:
        getattr(gx, name)(**{**_valid(name), arg: bad})
    message = str(caught.value)
    assert message.startswith(f"{name}: `{arg}"), message
    assert shown in message, message


@pytest.mark.parametrize(
    ("name", "arg"),
    [(n, a) for n, spec in SPECS.items() for a, (_, kind) in spec.items() if kind in VALUE_KINDS],
)
def test_value_arguments_accept_scalar_arrays_and_traced_values(name, arg):
    # A shape-() array, a NumPy scalar and a traced value (under jit) all mean the same number.
    make = getattr(gx, name)
    kwargs = _valid(name)
    counts = jnp.arange(12)
    expected = np.asarray(make(**kwargs)(counts))
    value = kwargs[arg]
    for given in (jnp.asarray(value), np.float32(value), np.asarray(value)):
        np.testing.assert_allclose(make(**{**kwargs, arg: given})(counts), expected, rtol=1e-6)
    traced = jax.jit(lambda v: make(**{**kwargs, arg: v})(counts))(jnp.asarray(value))
    np.testing.assert_allclose(traced, expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["cosine_onecycle_schedule", "linear_onecycle_schedule"])
def test_pct_start_cannot_be_traced(name):
    # It places the phase boundaries, which the program's structure depends on.
    with pytest.raises(TypeError, match=f"{name}: `pct_start` must be .* known when"):
        jax.jit(lambda p: getattr(gx, name)(100, 1.0, p)(3))(0.3)


# ----------------------------------------------------------------------------------------------
# Positional arguments: Optax's, or only the first.

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _positional(function) -> list[str]:
    return [p.name for p in inspect.signature(function).parameters.values() if p.kind in POSITIONAL]


@pytest.mark.parametrize("name", sorted(gx.schedules.__all__))
def test_positional_parameters_are_optax_or_only_the_first(name):
    optax = require_optax()
    ours = inspect.signature(getattr(gx, name)).parameters.values()
    assert all(p.kind in (*POSITIONAL, inspect.Parameter.KEYWORD_ONLY) for p in ours)
    positional = _positional(getattr(gx, name))
    theirs = getattr(optax, name, None) or getattr(optax.schedules, name, None)
    if theirs is None:
        assert len(positional) <= 1, positional
    else:
        assert positional == _positional(theirs)[: len(positional)], (positional, theirs)


POSITIONAL_CALLS = [
    lambda: gx.inverse_time_decay(1.0, 0.5),  # Keras' second argument is decay_steps
    lambda: gx.inverse_time_decay(1.0, 0.5, 10),
    lambda: gx.cosine_annealing_warm_restarts(1.0, 10),
    lambda: gx.cosine_annealing_warm_restarts(1.0, 10, 2),
    lambda: gx.cyclic_schedule(0.0, 1.0, 5),
    lambda: gx.cyclic_schedule(0.0, 1.0),
    lambda: gx.cosine_onecycle_schedule(100, 1.0, 0.3, 25.0, 1e4, True),
    lambda: gx.chained_schedule(1.0, [gx.constant_schedule(1.0)]),
    lambda: gx.multiplicative_schedule(1.0, lambda k: 0.9),
    lambda: gx.cosine_annealing_schedule(1.0, 10),  # torch's CosineAnnealingLR(opt, T_max)
    lambda: gx.swalr_schedule(1.0, 0.05),  # torch's SWALR(opt, swa_lr)
]


@pytest.mark.parametrize("call", POSITIONAL_CALLS)
def test_positional_calls_beyond_optax_fail_loudly(call):
    with pytest.raises(TypeError, match="positional argument"):
        call()
