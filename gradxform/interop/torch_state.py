"""Optimizer state that moves between ``torch.optim`` and gradxform mid-training.

The i-th leaf of ``jax.tree.leaves(params)`` is torch's i-th param of its one param group (per
group, with a dict of optimizers as given to :func:`gradxform.multi_transform`: its labels in
order are torch's param groups, each holding its leaves in that order). A complex leaf is one
torch param: torch keeps complex state tensors, whose real and imaginary parts are the
(real, imaginary) pairs gradxform keeps. Every counter of a gradxform state is torch's
``step`` (the count of a schedule included: a torch scheduler stepped once per optimizer step
has taken as many steps). Per state type, the field and torch's key:

===========================  =================================================
``ScaleByAdamState``         ``mu``: ``exp_avg``, ``nu``: ``exp_avg_sq`` (Adam, AdamW, RAdam)
``ScaleByAmsgradState``      as Adam, ``nu_max``: ``max_exp_avg_sq``
``ScaleByAdamaxState``       ``mu``: ``exp_avg``, ``u``: ``exp_inf``
``ScaleByNadamState``        ``mu_product``, ``mu``: ``exp_avg``, ``nu``: ``exp_avg_sq``
``ScaleBySparseAdamState``   ``mu``: ``exp_avg``, ``nu``: ``exp_avg_sq``
``ScaleByRssState``          ``sum_of_squares``: ``sum`` (Adagrad)
``ScaleByRmsState``          ``nu``: ``square_avg`` (``ScaleByRStdDevState``: ``mu``: ``grad_avg``)
``TraceState``               ``trace``: ``momentum_buffer`` (SGD, RMSprop)
``ScaleByAdaDeltaState``     ``e_g``: ``square_avg``, ``e_x``: ``acc_delta``
``ScaleByRpropState``        ``step_sizes``: ``step_size``, ``prev_updates``: ``prev``
``ScaleByAsgdState``         ``eta``, ``mu``, ``ax``
===========================  =================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _masks, _validate
from gradxform.interop.torch_classes import (
    CLASSES,
    check_hyperparameters,
    group_from_torch,
    group_to_torch,
    group_value,
    python_value,
)
from gradxform.optimizers._links import TorchSpec, torch_spec
from gradxform.wrappers.groups import MultiTransformState, multi_transform


class _Group(NamedTuple):
    """One torch param group: its record and its param leaves' paths, in torch's order."""

    spec: TorchSpec
    paths: list[str]


class _Layout(NamedTuple):
    """The optimizer as a whole, its param groups, and its state cut into and joined from
    one state per group."""

    transform: Any
    groups: list[_Group]
    split: Callable[[Any], list]
    join: Callable[[list], Any]


def _require_torch(who: str) -> Any:
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"{who} needs PyTorch, which is not installed: `pip install torch`, or install "
            "gradxform with its `compare` extra (`pip install gradxform[compare]`)."
        ) from error
    return torch


def _spec(who: str, optimizer: Any, where: str) -> TorchSpec:
    spec = torch_spec(optimizer)
    if spec is None or spec.cls_name not in CLASSES:
        names = ", ".join(sorted(n for c in CLASSES.values() for n in c.names))
        raise TypeError(
            f"{who}: {where} is not an optimizer whose state converts to and from torch's. "
            f"These do, called as they are: {names}. Wrapped in something else (chain, "
            "inject_hyperparams, ...), or given an option that torch has no parameter for "
            "(eps_root, adamw's mask), an optimizer has no torch.optim counterpart."
        )
    return spec


def _layout(who: str, optimizer: Any, params: Any, param_labels: Any) -> _Layout:
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    if not isinstance(optimizer, Mapping):
        if param_labels is not None:
            raise TypeError(
                f"{who}: `param_labels` goes with a dict of optimizers {{label: optimizer}} "
                f"(as multi_transform's), got one optimizer: {optimizer!r}"
            )
        spec = _spec(who, optimizer, "`optimizer`")
        return _Layout(optimizer, [_Group(spec, paths)], lambda s: [s], lambda subs: subs[0])
    if param_labels is None:
        raise TypeError(f"{who}: a dict of optimizers needs `param_labels`, as multi_transform")
    labels = list(optimizer)
    specs = [_spec(who, optimizer[label], f"optimizer[{label!r}]") for label in labels]
    classes = {spec.cls_name for spec in specs}
    if len(classes) != 1:
        raise ValueError(
            f"{who}: one torch optimizer has one class; the groups' optimizers reproduce "
            f"{sorted(classes)}"
        )
    transform = multi_transform(optimizer, param_labels)
    leaf_labels, _ = _masks.broadcast_prefix(
        _masks.resolve(param_labels, params), params, who, "param_labels"
    )
    groups = [
        _Group(spec, [p for p, lab in zip(paths, leaf_labels, strict=True) if lab == label])
        for label, spec in zip(labels, specs, strict=True)
    ]

    def split(state):
        return [state.inner_states[label] for label in labels]

    def join(subs):
        return MultiTransformState(dict(zip(labels, subs, strict=True)))

    return _Layout(transform, groups, split, join)


def _torch_groups(who: str, state_dict: Any, layout: _Layout) -> list[Mapping]:
    if not (isinstance(state_dict, Mapping) and {"state", "param_groups"} <= set(state_dict)):
        raise TypeError(
            f"{who}: `state_dict` must be torch_optimizer.state_dict(), a dict with 'state' "
            f"and 'param_groups', got {type(state_dict).__name__}"
        )
    torch_groups = list(state_dict["param_groups"])
    if len(torch_groups) != len(layout.groups):
        raise ValueError(
            f"{who}: the state_dict has {len(torch_groups)} param groups and the optimizer "
            f"{len(layout.groups)} (one, or one per label of a dict of optimizers, in order)"
        )
    for i, (torch_group, group) in enumerate(zip(torch_groups, layout.groups, strict=True)):
        if len(torch_group["params"]) != len(group.paths):
            raise ValueError(
                f"{who}: torch's param group {i} has {len(torch_group['params'])} params and "
                f"the params tree {len(group.paths)} leaves for it ({group.paths}); torch's "
                "params must be the leaves, in the order of jax.tree.leaves(params)"
            )
        check_hyperparameters(who, i, torch_group, group.spec)
    return torch_groups


def from_torch_state(
    optimizer: Any,
    params: Any,
    state_dict: Mapping[str, Any],
    *,
    param_labels: Any = None,
    step: int | None = None,
) -> Any:
    """The gradxform state of ``optimizer`` that continues a ``torch.optim`` run.

    ``optimizer`` is the torch-named gradxform optimizer (``adam``, ``sgd``, ...) built with the
    torch optimizer's hyperparameters; continuing with it from the returned state gives torch's
    numbers. The param groups' hyperparameters must equal the optimizer's (``lr`` excepted: a
    torch scheduler moves it, and gradxform's learning rate, a number or a schedule of the
    converted count, decides). torch's SGD keeps no step: its counters are ``step`` when
    given, else 0, except the momentum's, which is ``step`` (or 1) where torch holds momentum
    buffers (it only tells the first step from the others) and 0 where it does not; a schedule
    then needs ``step``.

    Args:
      optimizer: a torch-named gradxform optimizer, or ``{label: optimizer}`` as given to
        :func:`gradxform.multi_transform` (torch's param groups in the labels' order).
      params: the current params, a tree whose leaves are torch's params in order.
      state_dict: ``torch_optimizer.state_dict()``.
      param_labels: with a dict of optimizers, multi_transform's ``param_labels``.
      step: the count of steps taken, for torch's SGD; otherwise, if given, it must equal
        torch's ``step``.

    Returns:
      The state, as ``optimizer.init(params)`` builds it (a :class:`MultiTransformState`
      for a dict of optimizers).

    Raises:
      ImportError: torch is not installed.
      TypeError: an optimizer without a torch counterpart, or not a ``state_dict``.
      ValueError: param groups, param counts, hyperparameters, steps or shapes that do not
        match, or a param without the state the others have.


    Example:
      >>> import pytest, jax.numpy as jnp, gradxform as gx
      >>> torch = pytest.importorskip("torch")  # skips this example where torch is not installed
      >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
      >>> torch_adam = torch.optim.Adam([w], lr=0.1)
      >>> w.grad = torch.tensor([0.5, -2.0])
      >>> torch_adam.step()
      >>> params = [jnp.asarray(w.detach().numpy())]
      >>> state = gx.from_torch_state(gx.adam(0.1), params, torch_adam.state_dict())
      >>> state[0].count, [round(float(x), 4) for x in state[0].mu[0]]  # exp_avg = 0.1 g
      (Array(1, dtype=int32), [0.05, -0.2])
    """
    who = "from_torch_state"
    _require_torch(who)
    if step is not None:
        _validate.count(who, "step", step, minimum=0)
    layout = _layout(who, optimizer, params, param_labels)
    torch_groups = _torch_groups(who, state_dict, layout)
    template = layout.transform.init(params)
    torch_states = state_dict["state"]
    converted = []
    for group, torch_group, sub in zip(
        layout.groups, torch_groups, layout.split(template), strict=True
    ):
        states = [dict(torch_states.get(i, {})) for i in torch_group["params"]]
        converted.append(group_from_torch(who, group.spec.cls_name, sub, states, group.paths, step))
    return layout.join(converted)


def _check_state(who: str, state: Any, expected: Any) -> None:
    got_def, want_def = jax.tree.structure(state), jax.tree.structure(expected)
    if got_def != want_def:
        raise TypeError(
            f"{who}: `state` is not a state of `optimizer` for these params. Expected the "
            f"structure of optimizer.init(params):\n  {want_def}\ngot\n  {got_def}\nWas it "
            "made by another optimizer, or for other params?"
        )
    got = jax.tree_util.tree_flatten_with_path(state)[0]
    for (path, leaf), want in zip(got, jax.tree.leaves(expected), strict=True):
        dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
        if np.shape(leaf) != want.shape or dtype != want.dtype:
            raise ValueError(
                f"{who}: the state's leaf {jax.tree_util.keystr(path)} is "
                f"{dtype}{list(np.shape(leaf))}; optimizer.init(params) makes "
                f"{want.dtype}{list(want.shape)}"
            )


def to_torch_state(
    optimizer: Any,
    state: Any,
    params: Any,
    *,
    param_labels: Any = None,
    step: int | None = None,
) -> dict[str, Any]:
    """A ``state_dict`` of ``state`` that ``torch_optimizer.load_state_dict`` takes, after
    which torch continues with gradxform's numbers.

    The param groups are complete, as torch 2.13 writes them: every key its constructor sets,
    the hyperparameters of ``optimizer`` under torch's names, ``lr`` the learning rate of the
    next step (a schedule's value at the count), torch's implementation switches at their
    defaults (``foreach=None``, ``fused=None``, ``capturable=False``,
    ``differentiable=False``). ``step`` tensors hold the state's count (in float64 when that
    is torch's default dtype, else float32, as torch keeps them). A torch scheduler keeps its
    own count: create it before ``load_state_dict`` and load its state (or set its
    ``last_epoch``) to continue a schedule. Where the state keeps no counter (Adagrad
    without ``lr_decay``, RMSprop without momentum, with a constant learning rate; torch
    reads none there) ``step`` is written, 0 if not given.

    Args:
      optimizer: a torch-named gradxform optimizer, or ``{label: optimizer}`` as given to
        :func:`gradxform.multi_transform` (one torch param group per label, in order).
      state: ``optimizer``'s state (the multi_transform's, for a dict of optimizers).
      params: the current params, the tree ``state`` was built for.
      param_labels: with a dict of optimizers, multi_transform's ``param_labels``.
      step: the step count to write where the state keeps none; where it keeps one, if
        given, it must equal it.

    Returns:
      ``{"state": {index: {key: tensor}}, "param_groups": [group, ...]}``, params numbered
      across groups in order, as ``torch_optimizer.state_dict()``.

    Raises:
      ImportError: torch is not installed.
      TypeError: an optimizer without a torch counterpart, or a state of another optimizer.
      ValueError: a state whose leaves' shapes or dtypes, or whose counters, do not match.


    Example:
      >>> import pytest, jax.numpy as jnp, gradxform as gx
      >>> torch = pytest.importorskip("torch")  # skips this example where torch is not installed
      >>> opt, params = gx.sgd(0.1, momentum=0.9), [jnp.array([1.0, 2.0])]
      >>> _, state = opt.update([jnp.array([1.0, -1.0])], opt.init(params), params)
      >>> state_dict = gx.to_torch_state(opt, state, params)
      >>> state_dict["state"][0]["momentum_buffer"]  # torch's first buffer: the gradient
      tensor([ 1., -1.])
      >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
      >>> torch.optim.SGD([w], lr=0.1, momentum=0.9).load_state_dict(state_dict)
    """
    who = "to_torch_state"
    torch = _require_torch(who)
    if step is not None:
        _validate.count(who, "step", step, minimum=0)
    layout = _layout(who, optimizer, params, param_labels)
    _check_state(who, state, jax.eval_shape(layout.transform.init, params))
    torch_state: dict[int, dict] = {}
    param_groups = []
    index = 0
    for group, sub in zip(layout.groups, layout.split(state), strict=True):
        cls = CLASSES[group.spec.cls_name]
        count, per_param = group_to_torch(
            who, torch, group.spec.cls_name, sub, len(group.paths), step
        )
        ids = list(range(index, index + len(group.paths)))
        torch_state.update({i: s for i, s in zip(ids, per_param, strict=True) if s})
        hyperparameters = dict(group.spec.group)
        lr = hyperparameters["lr"]
        hyperparameters["lr"] = lr(count) if callable(lr) else lr
        param_groups.append(
            {
                **{key: python_value(group_value(key, hyperparameters)) for key in cls.group},
                "params": ids,
            }
        )
        index += len(group.paths)
    return {"state": torch_state, "param_groups": param_groups}
