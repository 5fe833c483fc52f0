"""``torch.optim``'s classes as the state conversion sees them: each param group's keys and each
param's state keys (torch 2.13's, in its order), which gradxform state field holds which torch
key, and the conversion of one param group's state in either direction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.optimizers._links import TorchSpec
from gradxform.transforms.adadelta import ScaleByAdaDeltaState
from gradxform.transforms.adam import (
    ScaleByAdamaxState,
    ScaleByAdamState,
    ScaleByAmsgradState,
)
from gradxform.transforms.asgd import ScaleByAsgdState
from gradxform.transforms.complex import SplitRealAndImaginaryArrays
from gradxform.transforms.momentum import TraceState
from gradxform.transforms.nadam import ScaleByNadamState
from gradxform.transforms.rms import ScaleByRmsState, ScaleByRssState, ScaleByRStdDevState
from gradxform.transforms.rprop import ScaleByRpropState
from gradxform.transforms.scaling import ScaleByScheduleState
from gradxform.transforms.sparse import ScaleBySparseAdamState


class TorchClass(NamedTuple):
    """A ``torch.optim`` class: its param group's keys and a param's state keys, in torch's
    order (``params`` comes last in a group), and the gradxform optimizers that reproduce it."""

    group: tuple[str, ...]
    state: tuple[str, ...]
    names: tuple[str, ...]


def _keys(words: str) -> tuple[str, ...]:
    return tuple(words.split())


_ADAM_GROUP = _keys(
    "lr betas eps weight_decay amsgrad maximize foreach capturable differentiable fused "
    "decoupled_weight_decay"
)
_ADAM_STATE = _keys("step exp_avg exp_avg_sq max_exp_avg_sq")

CLASSES = {
    "SGD": TorchClass(
        _keys("lr momentum dampening weight_decay nesterov maximize foreach differentiable fused"),
        _keys("momentum_buffer"),
        ("sgd",),
    ),
    "Adam": TorchClass(_ADAM_GROUP, _ADAM_STATE, ("adam", "amsgrad")),
    "AdamW": TorchClass(_ADAM_GROUP, _ADAM_STATE, ("adamw",)),
    "Adagrad": TorchClass(
        _keys(
            "lr lr_decay eps weight_decay initial_accumulator_value foreach maximize "
            "differentiable fused"
        ),
        _keys("step sum"),
        ("adagrad",),
    ),
    "RMSprop": TorchClass(
        _keys(
            "lr momentum alpha eps centered weight_decay capturable foreach maximize differentiable"
        ),
        _keys("step square_avg momentum_buffer grad_avg"),
        ("rmsprop",),
    ),
    "Adamax": TorchClass(
        _keys("lr betas eps weight_decay foreach maximize differentiable capturable"),
        _keys("step exp_avg exp_inf"),
        ("adamax",),
    ),
    "NAdam": TorchClass(
        _keys(
            "lr betas eps weight_decay momentum_decay decoupled_weight_decay maximize foreach "
            "capturable differentiable"
        ),
        _keys("step mu_product exp_avg exp_avg_sq"),
        ("nadam",),
    ),
    "RAdam": TorchClass(
        _keys(
            "lr betas eps weight_decay maximize foreach capturable decoupled_weight_decay "
            "differentiable"
        ),
        _keys("step exp_avg exp_avg_sq"),
        ("radam",),
    ),
    "Adadelta": TorchClass(
        _keys("lr rho eps weight_decay maximize capturable foreach differentiable"),
        _keys("step square_avg acc_delta"),
        ("adadelta",),
    ),
    "Rprop": TorchClass(
        _keys("lr etas step_sizes foreach maximize differentiable capturable"),
        _keys("step prev step_size"),
        ("rprop",),
    ),
    "ASGD": TorchClass(
        _keys("lr lambd alpha t0 weight_decay foreach maximize differentiable capturable"),
        _keys("step eta mu ax"),
        ("asgd",),
    ),
    "SparseAdam": TorchClass(
        _keys("lr betas eps maximize"), _keys("step exp_avg exp_avg_sq"), ("sparse_adam",)
    ),
}

# torch's implementation switches, which are not hyperparameters, at their defaults.
_SWITCHES = {"foreach": None, "fused": None, "capturable": False, "differentiable": False}
# Keys a torch group may hold besides its class's: a scheduler's, and named params'.
_EXTRA_KEYS = {"params", "initial_lr", "param_names"}

# Per state type: (field, torch key) of its per-param trees, and of its scalars.
_TREES: dict[type, tuple[tuple[str, str], ...]] = {
    ScaleByAdamState: (("mu", "exp_avg"), ("nu", "exp_avg_sq")),
    ScaleByAmsgradState: (("mu", "exp_avg"), ("nu", "exp_avg_sq"), ("nu_max", "max_exp_avg_sq")),
    ScaleByAdamaxState: (("mu", "exp_avg"), ("u", "exp_inf")),
    ScaleByNadamState: (("mu", "exp_avg"), ("nu", "exp_avg_sq")),
    ScaleBySparseAdamState: (("mu", "exp_avg"), ("nu", "exp_avg_sq")),
    ScaleByRssState: (("sum_of_squares", "sum"),),
    ScaleByRmsState: (("nu", "square_avg"),),
    ScaleByRStdDevState: (("nu", "square_avg"), ("mu", "grad_avg")),
    TraceState: (("trace", "momentum_buffer"),),
    ScaleByAdaDeltaState: (("e_g", "square_avg"), ("e_x", "acc_delta")),
    ScaleByRpropState: (("step_sizes", "step_size"), ("prev_updates", "prev")),
    ScaleByAsgdState: (("ax", "ax"),),
    ScaleByScheduleState: (),
}
_SCALARS = {
    ScaleByNadamState: (("mu_product", "mu_product"),),
    ScaleByAsgdState: (("eta", "eta"), ("mu", "mu")),
}
_KNOWN = tuple(_TREES)


def _is_known(x: Any) -> bool:
    return isinstance(x, _KNOWN)


def _is_pair(x: Any) -> bool:
    return isinstance(x, SplitRealAndImaginaryArrays)


def python_value(value: Any) -> Any:
    """A hyperparameter as torch's group holds it: a Python float, bool, tuple or ``None``."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, tuple | list):
        return tuple(python_value(v) for v in value)
    return float(value)


def group_value(key: str, hyperparameters: Mapping[str, Any]) -> Any:
    """A group key's value: the optimizer's hyperparameter, or torch's default switch."""
    return hyperparameters[key] if key in hyperparameters else _SWITCHES[key]


def check_hyperparameters(who: str, index: int, torch_group: Mapping, spec: TorchSpec) -> None:
    """Raises ``ValueError`` unless torch's group is ``spec``'s class's, with its values
    (``lr`` excepted: a scheduler moves it)."""
    expected = set(CLASSES[spec.cls_name].group)
    present = set(torch_group) - _EXTRA_KEYS
    if present != expected:
        raise ValueError(
            f"{who}: torch's param group {index} is not a torch.optim.{spec.cls_name} group, "
            f"as the optimizer's: it lacks {sorted(expected - present)} and has "
            f"{sorted(present - expected)} besides. Is the state_dict another optimizer's?"
        )
    differences = [
        f"{key}: torch {python_value(torch_group[key])!r}, gradxform {python_value(value)!r}"
        for key, value in spec.group.items()
        if key != "lr" and python_value(torch_group[key]) != python_value(value)
    ]
    if differences:
        raise ValueError(
            f"{who}: torch's param group {index} has other hyperparameters than the "
            f"torch.optim.{spec.cls_name} the optimizer reproduces: {'; '.join(differences)}. "
            "Build the gradxform optimizer with torch's."
        )


# ----------------------------------------------------------------------------------------------
# torch -> gradxform.


def _numpy(tensor: Any) -> np.ndarray:
    """A copy (torch's tensor is updated in place by later steps) as a NumPy array."""
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            tensor = tensor.float()
        return tensor.numpy().copy()
    return np.array(tensor)


def _leaf_from_torch(who: str, like: Any, tensor: Any, path: str, key: str) -> Any:
    value = _numpy(tensor)
    pair = _is_pair(like)
    shape = like.real.shape if pair else like.shape
    if value.shape != shape or np.iscomplexobj(value) != pair:
        kind = "complex" if pair else "real"
        raise ValueError(
            f"{who}: torch's {key!r} of the param {path} is {value.dtype}{list(value.shape)}; "
            f"the param is {kind} of shape {list(shape)}"
        )
    if pair:
        return SplitRealAndImaginaryArrays(
            jnp.asarray(value.real, like.real.dtype), jnp.asarray(value.imag, like.imaginary.dtype)
        )
    return jnp.asarray(value, like.dtype)


def _entry(who: str, state: Mapping, key: str, path: str) -> Any:
    if key not in state:
        raise ValueError(
            f"{who}: torch's state of the param {path} has no {key!r} (it has {sorted(state)}): "
            "is the state_dict another optimizer's, or of other options?"
        )
    return state[key]


def _same_scalar(who: str, values: list[float], key: str, paths: list[str]) -> float:
    if len(set(values)) > 1:
        raise ValueError(
            f"{who}: torch's {key!r} differs between the params {paths}: {values}. gradxform "
            "keeps one for all, as every param takes every step"
        )
    return values[0]


def _counts(who: str, cls_name: str, sub: Any, states: list, paths: list, step: Any):
    """``count(node_type)``: the count each counter of the group's state takes."""
    stepped = bool(states) and all(states)
    if cls_name != "SGD":
        count: float = 0
        if stepped:
            steps = [float(_entry(who, s, "step", p)) for s, p in zip(states, paths, strict=True)]
            count = _same_scalar(who, steps, "step", paths)
        if step is not None and step != count:
            raise ValueError(f"{who}: `step` is {step}, torch's step {count:g}")
        return lambda node_type: int(count)
    # torch's SGD keeps no step.
    schedules = [n for n in jax.tree.leaves(sub, is_leaf=_is_known) if _is_known(n)]
    if step is None and any(isinstance(n, ScaleByScheduleState) for n in schedules):
        raise ValueError(
            f"{who}: torch's SGD keeps no step count, and the optimizer's learning rate is a "
            "schedule of it: pass `step=` (the optimizer steps taken, the scheduler's last_epoch)"
        )
    if stepped and step == 0:
        raise ValueError(f"{who}: `step` is 0, but torch holds momentum buffers: it has stepped")
    momentum_count = (1 if step is None else step) if stepped else 0
    other_count = 0 if step is None else step
    return lambda node_type: momentum_count if node_type is TraceState else other_count


def group_from_torch(
    who: str, cls_name: str, sub: Any, states: list[dict], paths: list[str], step: Any
) -> Any:
    """``sub`` (``init``'s state of one group) holding torch's ``states``, one per param."""
    held = [bool(s) for s in states]
    if any(held) and not all(held):
        missing = [p for p, h in zip(paths, held, strict=True) if not h]
        raise ValueError(
            f"{who}: torch holds no state for the params {missing} and does for the others. "
            "gradxform steps every param together: a param torch never stepped (no gradient) "
            "has no gradxform counterpart"
        )
    stepped = bool(states) and all(held)
    count = _counts(who, cls_name, sub, states, paths, step)

    def convert(node):
        if not _is_known(node):
            raise TypeError(f"{who}: a state leaf outside the known states: {node!r}")
        changes = {}
        if "count" in node._fields:
            changes["count"] = jnp.asarray(count(type(node)), jnp.int32)
        if not stepped:  # torch holds nothing before the first step: init's state is its own
            return node._replace(**changes)
        for field, key in _TREES[type(node)]:
            entries, treedef = jax.tree.flatten(getattr(node, field), is_leaf=_is_pair)
            tensors = [_entry(who, s, key, p) for s, p in zip(states, paths, strict=True)]
            leaves = [
                _leaf_from_torch(who, like, tensor, path, key)
                for like, tensor, path in zip(entries, tensors, paths, strict=True)
            ]
            changes[field] = treedef.unflatten(leaves)
        for field, key in _SCALARS.get(type(node), ()):
            values = [float(_entry(who, s, key, p)) for s, p in zip(states, paths, strict=True)]
            value = _same_scalar(who, values, key, paths)
            changes[field] = jnp.asarray(value, getattr(node, field).dtype)
        return node._replace(**changes)

    return jax.tree.map(convert, sub, is_leaf=_is_known)


# ----------------------------------------------------------------------------------------------
# gradxform -> torch.


def _tensor(torch: Any, leaf: Any) -> Any:
    if _is_pair(leaf):
        return torch.complex(_tensor(torch, leaf.real), _tensor(torch, leaf.imaginary))
    value = np.array(leaf)  # a writable copy, which torch may update in place
    if value.dtype == jnp.bfloat16:  # torch cannot take NumPy's (ml_dtypes') bfloat16
        return torch.from_numpy(value.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(value)


def group_to_torch(
    who: str, torch: Any, cls_name: str, sub: Any, num_params: int, step: Any
) -> tuple[int, list[dict]]:
    """The count of one group's state and each param's torch state (``{}`` for none)."""
    cls = CLASSES[cls_name]
    nodes = jax.tree.leaves(sub, is_leaf=_is_known)
    unknown = [n for n in nodes if not _is_known(n)]
    if unknown:
        raise TypeError(f"{who}: state leaves outside the known states: {unknown}")
    counts = sorted({int(n.count) for n in nodes if "count" in n._fields})
    if len(counts) > 1:
        raise ValueError(f"{who}: the state's counters disagree: {counts}")
    if counts and step is not None and step != counts[0]:
        raise ValueError(f"{who}: `step` is {step}, the state's count {counts[0]}")
    count = counts[0] if counts else (step or 0)
    # torch keeps step counters and scalar state in its default dtype if float64, else float32.
    scalar_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    per_param: list[dict] = [{} for _ in range(num_params)]
    for node in nodes:
        if cls_name == "SGD" and isinstance(node, TraceState) and int(node.count) == 0:
            continue  # torch's SGD holds no buffer before its first step (then b_1 = g_1)
        for field, key in _TREES[type(node)]:
            entries = jax.tree.leaves(getattr(node, field), is_leaf=_is_pair)
            for state, entry in zip(per_param, entries, strict=True):
                state[key] = _tensor(torch, entry)
        for field, key in _SCALARS.get(type(node), ()):
            for state in per_param:  # one tensor per param: torch updates each in place
                state[key] = torch.tensor(float(getattr(node, field)), dtype=scalar_dtype)
    if "step" in cls.state:
        for state in per_param:
            # SparseAdam counts in a Python int; the others in a float tensor.
            is_int = cls_name == "SparseAdam"
            state["step"] = count if is_int else torch.tensor(float(count), dtype=scalar_dtype)
    return count, [{key: s[key] for key in cls.state if key in s} for s in per_param]
