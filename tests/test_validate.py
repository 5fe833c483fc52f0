"""One validation path: every public factory checks its arguments the same way, and a call
written for Optax either means the same in gradxform or fails loudly.

The rules (``gradxform/_validate.py``): ``TypeError`` for a value of the wrong kind (``None``, a
string, a bool where a number is expected, an array of more than one element, a fraction where
a whole number is expected), ``ValueError`` for a value out of range (negative, NaN, inf), both
naming the function, the argument and the value; concrete arrays are checked like numbers,
traced ones only for their kind and shape.
"""

from __future__ import annotations

import inspect
import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

# ----------------------------------------------------------------------------------------------
# The findings, one by one.


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: gx.adam(b1=None), TypeError, r"adam: `b1` must be .*got None"),
        (lambda: gx.clip("1"), TypeError, r"clip: `max_delta` must be .*got '1'"),
        (lambda: gx.sgd(float("inf")), ValueError, r"sgd: `learning_rate` must be .*got inf"),
        (lambda: gx.adam(b1=True), TypeError, r"adam: `b1` must be .*bool True"),
        (
            lambda: gx.adam(learning_rate=np.array([0.1, 0.2])),
            TypeError,
            r"adam: `learning_rate` must be .*array of shape \(2,\)",
        ),
        (lambda: gx.adam(b1=float("nan")), ValueError, r"adam: `b1` must be a number in \[0, 1\)"),
        (lambda: gx.rmsprop(eps=-1.0), ValueError, r"rmsprop: `eps` must be a finite number >= 0"),
    ],
)
def test_reported_bad_arguments_raise_at_construction(call, error, message):
    with pytest.raises(error, match=message):
        call()


# Count arguments raised ValueError in some factories and TypeError in others. Now a fraction is
# always a TypeError and a negative count always a ValueError.
COUNTS = {
    "MultiSteps.every_k_schedule": lambda k: gx.MultiSteps(gx.sgd(0.1), every_k_schedule=k),
    "gradient_accumulation.k": lambda k: gx.gradient_accumulation(gx.sgd(0.1), k=k),
    "lookahead.sync_period": lambda k: gx.lookahead(gx.sgd(0.1), sync_period=k),
    "ema_params.start_step": lambda k: gx.ema_params(0.9, start_step=k),
    "swa_params.start_step": lambda k: gx.swa_params(start_step=k),
    "reduce_on_plateau.patience": lambda k: gx.reduce_on_plateau(patience=k),
    "reduce_on_plateau.cooldown": lambda k: gx.reduce_on_plateau(cooldown=k),
    "reduce_on_plateau.accumulation_size": lambda k: gx.reduce_on_plateau(accumulation_size=k),
    "apply_if_finite.max_consecutive_errors": lambda k: gx.apply_if_finite(gx.sgd(0.1), k),
    "dynamic_loss_scale.period": lambda k: gx.dynamic_loss_scale(gx.sgd(0.1), period=k),
    "DynamicLossScale.period": lambda k: gx.DynamicLossScale(1.0, period=k),
    "join_transforms.boundaries": lambda k: gx.join_transforms(
        [gx.sgd(0.1), gx.sgd(0.1)], boundaries=[k]
    ),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_count_arguments_raise_the_same_errors_everywhere(name):
    build = COUNTS[name]
    who = name.split(".")[0]
    for bad in (2.5, "3", None, True):
        with pytest.raises(TypeError, match=rf"{re.escape(who)}.*must be a whole number"):
            build(bad)
    with pytest.raises(ValueError, match=rf"{re.escape(who)}.*must be a whole number in"):
        build(-1)
    build(3)  # accepted


def test_concrete_arrays_are_checked_and_traced_values_are_not():
    with pytest.raises(ValueError, match=r"adam: `learning_rate` must be a finite number >= 0"):
        gx.adam(jnp.array(-1.0))
    with pytest.raises(ValueError, match=r"sgd: `momentum`"):
        gx.sgd(0.1, momentum=np.float32(np.nan))
    params = {"w": jnp.ones(2)}

    def step(learning_rate):
        # The value is unknown while the factory runs: only its kind and shape are checked.
        opt = gx.adam(learning_rate)
        return opt.update(params, opt.init(params), params)[0]["w"]

    # Adam's first step is -lr * sign(g): with a negative (traced) rate, +0.1.
    np.testing.assert_allclose(jax.jit(step)(-0.1), [0.1, 0.1], rtol=1e-6)
    with pytest.raises(TypeError, match=r"adam: `learning_rate` .*shape \(2,\)"):
        jax.jit(step)(jnp.array([0.1, 0.2]))


# ----------------------------------------------------------------------------------------------
# A sweep over every public factory: every argument rejects the wrong kind of value.

# The arguments a factory needs besides the one under test.
_INNER = gx.sgd(0.1)
REQUIRED = {
    "scale_by_schedule_free": {"learning_rate": 0.1},
    "schedule_free_sgd": {"learning_rate": 0.1},
    "schedule_free_adamw": {"learning_rate": 0.1},
    "schedule_free": {"base_optimizer": _INNER, "learning_rate": 0.1},
    "sgd": {"learning_rate": 0.1},
    "trace": {"decay": 0.9},
    "ema": {"decay": 0.9},
    "scale": {"step_size": 0.1},
    "scale_by_learning_rate": {"learning_rate": 0.1},
    "decay_after_step": {"learning_rate": 0.1},
    "scale_by_schedule": {"step_size_fn": lambda k: 0.1},
    "clip": {"max_delta": 1.0},
    "clip_by_global_norm": {"max_norm": 1.0},
    "clip_by_block_rms": {"threshold": 1.0},
    "adaptive_grad_clip": {"clipping": 0.1},
    "ema_params": {"decay": 0.9},
    "masked": {"inner": _INNER, "mask": {"w": True}},
    "blocked_matrices": {"inner": _INNER, "block_size": 2},
    "freeze": {"mask": {"w": True}},
    "multi_transform": {"transforms": {"a": _INNER}, "param_labels": {"w": "a"}},
    "lookahead": {"fast_optimizer": _INNER},
    "apply_if_finite": {"inner": _INNER, "max_consecutive_errors": 2},
    "dynamic_loss_scale": {"inner": _INNER},
    "MultiSteps": {"opt": _INNER, "every_k_schedule": 2},
    "gradient_accumulation": {"inner": _INNER, "k": 2},
    "join_transforms": {"transforms": [_INNER, _INNER], "boundaries": [2]},
    "DynamicLossScale": {"loss_scale": 1.0},
    "scale_by_rprop": {"learning_rate": 0.1},
    "scale_by_zoom_linesearch": {"max_linesearch_steps": 10},
    "scale_by_backtracking_linesearch": {"max_backtracking_steps": 10},
    **{
        name: {"learning_rate": 0.1}
        for name in (
            *("adabelief", "adan", "fromage", "lamb", "lars", "noisy_sgd", "novograd"),
            *("optimistic_adam", "optimistic_adam_v2", "optimistic_gradient_descent"),
            *("sign_sgd", "signum", "sm3", "yogi"),
        )
    },
    "conditionally_mask": {"inner": _INNER, "should_transform_fn": lambda step: step > 0},
    "conditionally_transform": {"inner": _INNER, "should_transform_fn": lambda step: step > 0},
    "dpsgd": {"learning_rate": 0.1, "l2_norm_clip": 1.0, "noise_multiplier": 0.5, "seed": 0},
    "measure_with_ema": {"measure": lambda u: u, "decay": 0.9},
    "partition": {"transforms": {"a": _INNER}, "param_labels": {"w": "a"}},
    "microbatch": {"fun": lambda x: x, "argnums": 0, "microbatch_size": 2},
    "per_example_layer_norm_clip": {"grads": {"w": jnp.ones((2, 3))}, "global_l2_norm_clip": 1.0},
    "unitwise_clip": {"g_norm": 1.0, "max_norm": 1.0, "grad": 1.0},
    "inject_stateful_hyperparams": {"inner_factory": gx.sgd},
    "scale_by_dog": {"init_step": ("heuristic", 1e-6)},
    "galore_adamw": {"learning_rate": 0.1},
    "galore": {"learning_rate": 0.1},
    "scale_by_madgrad": {"learning_rate": 0.1},
    "ademamix": {"learning_rate": 0.1},
    "sophia": {"learning_rate": 0.1},
    "simplified_ademamix": {"learning_rate": 0.1},
    "adopt": {"learning_rate": 0.1},
    "acprop": {"learning_rate": 0.1},
    "madgrad": {"learning_rate": 0.1},
    "mechanize": {"base_optimizer": _INNER},
    "sam": {"optimizer": _INNER, "adv_optimizer": _INNER},
}
# Public callables that build no transformation, or take no validated arguments.
NOT_FACTORIES = {
    "GradientTransformation",
    "EmptyState",
    "MaskedNode",
    "FlatLayout",
    "CheckpointError",
    "apply_updates",
    "averaged_params",
    "asgd_averaged_params",
    "lookahead_slow_params",
    "current_loss_scale",
    "decay_matrices_only",
    "save_state",
    "load_state",
    "flatten_params",
    "all_finite",
    "chain",
    "named_chain",
    "identity",
    "set_to_zero",
    "zero_nans",
    "stateless",
    "inject_hyperparams",
    "cross_replica_mean",
    # Optax's protocol helpers and numerics: functions of data, not factories.
    "GradientTransformationExtraArgs",
    "init_empty_state",
    "stateless_with_tree_map",
    "with_extra_args_support",
    "global_norm",
    "safe_norm",
    "safe_root_mean_squares",
    "safe_increment",
    "safe_int32_increment",
    "bias_correction",
    "update_moment",
    "update_infinity_moment",
    "update_moment_per_elem_norm",
    "tree_map_params",
    "WrappedSchedule",
    "shard_optimizer_state",
    "from_torch_state",
    "to_torch_state",
    # Optax's functions of arrays and trees (their arguments are data, not hyperparameters).
    "unitwise_clip",
    "incremental_update",
    "periodic_update",
}


# Optax's type names: aliases and protocols for type checkers, not functions.
TYPES = {
    "MaskOrFn",
    "OptState",
    "Params",
    "ScalarOrSchedule",
    "Schedule",
    "StatefulSchedule",
    "TransformInitFn",
    "TransformUpdateExtraArgsFn",
    "TransformUpdateFn",
    "Updates",
}


def _factories():
    names = []
    for name in gx.__all__:
        obj = getattr(gx, name)
        if name in NOT_FACTORIES | TYPES or not callable(obj) or name.endswith("State"):
            continue
        if obj.__module__.startswith("gradxform.schedules"):
            continue  # schedules have their own sweep in the schedule tests
        names.append(name)
    return names


def _kinds(factory):
    """Each checked argument's kind: number, count, bool, dtype, mask or transformation."""
    kinds = {}
    for p in inspect.signature(factory).parameters.values():
        default = p.default
        if p.name.endswith("_dtype"):
            kinds[p.name] = "dtype"
        elif p.name in ("mask",):
            kinds[p.name] = "mask"
        elif isinstance(default, bool):
            kinds[p.name] = "bool"
        elif isinstance(default, int) and p.name not in ("initial_scale",):
            kinds[p.name] = "count"
        elif isinstance(default, float):
            kinds[p.name] = "number"
    return kinds


BAD_VALUES = {
    "number": [
        (None, TypeError),
        ("0.1", TypeError),
        (True, TypeError),
        (np.array([0.1, 0.2]), TypeError),
        (jnp.ones((1,)), TypeError),
        (math.nan, ValueError),
        (math.inf, ValueError),
    ],
    "count": [(None, TypeError), ("2", TypeError), (True, TypeError), (2.5, TypeError)],
    "bool": [(None, TypeError), ("yes", TypeError), (1, TypeError)],
    "dtype": [("float33", TypeError), (3, TypeError), (jnp.int32, TypeError)],
    "mask": [("yes", TypeError), ({"w": 1}, TypeError)],
}


# Values that are bad for most arguments of their kind but valid for these (as in Optax: an
# infinite curv_rtol switches the curvature criterion off, an infinite increase_factor starts
# each search at max_learning_rate, and approx_dec_rtol=None keeps Armijo's criterion only).
VALID_EXCEPTIONS = {
    ("clip_by_global_norm", "norm_type"): [math.inf],
    ("scale_by_zoom_linesearch", "curv_rtol"): [math.inf],
    ("scale_by_zoom_linesearch", "approx_dec_rtol"): [None],
    ("scale_by_backtracking_linesearch", "increase_factor"): [math.inf],
    # The authors' default: no limit on the growth of d.
    **{
        (name, "growth_rate"): [math.inf]
        for name in ("prodigy", "scale_by_prodigy", "dadapt_adamw", "scale_by_dadapt_adam")
    },
}


def _is_valid_exception(name, argument, value) -> bool:
    valid = VALID_EXCEPTIONS.get((name, argument), [])
    return any(value is v for v in valid) or (isinstance(value, float) and value in valid)


def _cases():
    for name in _factories():
        for argument, kind in _kinds(getattr(gx, name)).items():
            for value, error in BAD_VALUES[kind]:
                if _is_valid_exception(name, argument, value):
                    continue
                yield pytest.param(name, argument, value, error, id=f"{name}-{argument}-{value!r}")


def test_the_sweep_covers_the_factories():
    # A new public factory is swept too (or listed above with a reason).
    covered = {name for name in _factories() if _kinds(getattr(gx, name))}
    assert {"adam", "sgd", "rmsprop", "lion", "scale_by_adam", "trace", "MultiSteps"} <= covered
    assert len(list(_cases())) > 300


@pytest.mark.parametrize(("name", "argument", "value", "error"), list(_cases()))
def test_every_argument_rejects_the_wrong_kind_of_value(name, argument, value, error):
    factory = getattr(gx, name)
    kwargs = {**REQUIRED.get(name, {}), argument: value}
    who = name
    with pytest.raises(error) as info:
        factory(**kwargs)
    message = str(info.value)
    # The message names the function (or the transformation it builds, for links such as the
    # decay inside an optimizer) and the argument.
    assert f"`{argument}`" in message, message
    assert message.startswith(who) or f"{who}:" in message or f"{who} " in message, message


# ----------------------------------------------------------------------------------------------
# Optax's calls mean the same, or fail: positional parameters match Optax's.


def _optax_function(name):
    optax = pytest.importorskip("optax", reason="Optax is in the `compare` extra")
    for namespace in (optax, optax.transforms, optax.schedules, optax.contrib):
        function = getattr(namespace, name, None)
        if callable(function) and not (isinstance(function, type) and issubclass(function, tuple)):
            return function
    return None


def _positional(function):
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


# Public callables that are not factories: their arguments are data, in the obvious order.
POSITIONAL_EXEMPT = {
    "save_state": "numpy.save's order: the file, then what is written to it",
    "load_state": "the file, then the template",
    "from_torch_state": "the optimizer, then the params and torch's state_dict it converts",
    "to_torch_state": "the optimizer, then the state it converts and the params it is for",
    "gauss_newton_bartlett": "jax.grad's order: the model's logits function, the params, the "
    "key that samples the labels, then the logits function's arguments",
}


def _public_callables():
    for name in gx.__all__:
        obj = getattr(gx, name)
        if not callable(obj) or name in POSITIONAL_EXEMPT or name in TYPES:
            continue
        if isinstance(obj, type) and (issubclass(obj, tuple) or issubclass(obj, Exception)):
            continue  # NamedTuple states and exceptions
        if name in ("FlatLayout", "GradientTransformation"):
            continue
        yield name


@pytest.mark.parametrize("name", list(_public_callables()))
def test_positional_parameters_are_optax_or_only_the_first(name):
    ours = _positional(getattr(gx, name))
    theirs = _optax_function(name)
    if theirs is None:
        assert len(ours) <= 1, f"gx.{name} has no Optax counterpart: only one positional {ours}"
    else:
        expected = _positional(theirs)
        assert ours == expected[: len(ours)], (
            f"gx.{name}'s positional parameters {ours} differ from optax.{name}'s {expected}"
        )


@pytest.mark.parametrize(
    ("call", "meaning"),
    [
        # Written for Optax: eps_root, not weight_decay.
        (lambda: gx.adam(1e-3, 0.9, 0.999, 1e-8, 1e-8), {"eps_root": 1e-8}),
        # initial_accumulator_value, not lr_decay.
        (lambda: gx.adagrad(0.1, 0.5), {"initial_accumulator_value": 0.5}),
    ],
)
def test_optax_positional_calls_mean_what_they_mean_in_optax(call, meaning):
    recorded = {}
    real = {
        "scale_by_adam": gx.optimizers.adam_family.scale_by_adam,
        "scale_by_rss": gx.optimizers.rms.scale_by_rss,
    }

    def spy(name):
        def wrapper(*args, **kwargs):
            bound = inspect.signature(real[name]).bind(*args, **kwargs)
            recorded.update(bound.arguments)
            return real[name](*args, **kwargs)

        return wrapper

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gx.optimizers.adam_family, "scale_by_adam", spy("scale_by_adam"))
        patch.setattr(gx.optimizers.rms, "scale_by_rss", spy("scale_by_rss"))
        call()
    for argument, value in meaning.items():
        assert recorded[argument] == value


@pytest.mark.parametrize(
    "call",
    [
        lambda: gx.rmsprop(0.1, 0.9, 1e-8, 0.0),  # Optax: initial_scale; ours: keyword-only
        lambda: gx.nadam(1e-3, 0.9, 0.999, 1e-8, 0.0, None),  # Optax: mu_dtype
        lambda: gx.amsgrad(1e-3, 0.9, 0.999, 1e-8, 0.0, None, True),  # Optax: bias_correction_mu
        lambda: gx.lion(1e-4, 0.9, 0.99, None, 1e-3, None, 1),
        lambda: gx.adamax(2e-3, 0.9, 0.999, 1e-8, 0.0),
        lambda: gx.freeze(gx.adam(0.1), {"w": True}),  # Optax's freeze takes the mask only
    ],
)
def test_calls_that_would_mean_something_else_fail_loudly(call):
    with pytest.raises(TypeError):
        call()


# ----------------------------------------------------------------------------------------------
# The README lists every default that differs from Optax's.

# Optax writes "no momentum" as None where gradxform writes 0: the same optimizer.
_SAME = [(None, 0.0)]


def _readme_differences() -> list[str]:
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    start = text.index("### Where the defaults differ from Optax")
    end = text.index("\n## ", start)
    return [line for line in text[start:end].splitlines() if line.startswith("|")]


def test_readme_lists_every_default_that_differs_from_optax():
    rows = _readme_differences()
    missing = []
    for name in _public_callables():
        theirs = _optax_function(name)
        if theirs is None:
            continue
        ours = inspect.signature(getattr(gx, name)).parameters
        for argument, parameter in inspect.signature(theirs).parameters.items():
            if argument not in ours or parameter.default is inspect.Parameter.empty:
                continue
            a, b = ours[argument].default, parameter.default
            if a is inspect.Parameter.empty or a == b or (b, a) in _SAME:
                continue
            if not any(f"`{name}" in row and argument in row for row in rows):
                missing.append(f"{name}({argument}=): gradxform {a!r}, Optax {b!r}")
    assert not missing, "README's table of differences from Optax lacks:\n" + "\n".join(missing)
