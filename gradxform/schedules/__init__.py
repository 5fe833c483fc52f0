"""Schedules: a hyperparameter's value as a pure function of the update count.

A schedule maps ``k``, the number of updates made so far (0 for the first update), to the value
used for update ``k + 1``. For a learning rate this is the number ``torch.optim`` holds in
``param_groups[0]["lr"]`` after ``k`` calls to ``scheduler.step()``, and the number Keras
computes from ``optimizer.iterations == k``.

Every schedule here:

* is elementwise in ``k`` (an array of counts gives an array of values) and has no Python
  branching on ``k``, so it traces once under ``jit`` and maps under ``vmap``;
* accepts ``k`` as the optimizer's int32 counter, an int64 array under ``jax_enable_x64``, a
  Python or NumPy integer of any size below ``2**63`` (exact, in NumPy int64), or a float; a
  count below 0 gives the value at 0 (see :mod:`._counts`); ``multiplicative_schedule``, a
  product over the ``k`` steps so far, takes counts up to its integer dtype's range only;
* computes in the default float dtype (float32, or float64 under ``jax_enable_x64``), with
  the integer parts of the formula (steps elapsed, steps remaining, position in a cycle) exact
  before a single rounding to that dtype;
* takes its step arguments (``transition_steps``, boundaries, ...) as static whole numbers up
  to ``2**53``, checked when the schedule is built, while value arguments (``init_value``,
  ``decay_rate``, ...) are finite scalars that may also be traced, for instance to ``vmap``
  over a batch of initial values. Every argument is checked when the schedule is built,
  through :mod:`gradxform._validate`.

Names and signatures follow Optax where Optax has the schedule (a positional argument only
where Optax has the same one in the same place; elsewhere only the first); the numbers follow
``torch.optim.lr_scheduler`` where a PyTorch scheduler exists (OneCycleLR's phase boundaries,
CosineAnnealingWarmRestarts, CyclicLR, SequentialLR, ChainedScheduler, MultiplicativeLR,
CosineAnnealingLR, SWALR).

Modules, by family: ``polynomial`` (constant, linear, polynomial, piecewise), ``exponential``,
``cosine``, ``restarts`` (warm restarts, SGDR), ``cyclic`` (one-cycle, cyclic), ``swa``,
``join`` (in sequence, or multiplied together).
"""

from gradxform.schedules.cosine import (
    cosine_annealing_schedule,
    cosine_decay_schedule,
    warmup_cosine_decay_schedule,
)
from gradxform.schedules.cyclic import (
    cosine_onecycle_schedule,
    cyclic_schedule,
    linear_onecycle_schedule,
)
from gradxform.schedules.exponential import (
    exponential_decay,
    inverse_time_decay,
    multiplicative_schedule,
    warmup_exponential_decay_schedule,
)
from gradxform.schedules.join import chained_schedule, join_schedules
from gradxform.schedules.polynomial import (
    constant_schedule,
    linear_schedule,
    piecewise_constant_schedule,
    piecewise_interpolate_schedule,
    polynomial_schedule,
    warmup_constant_schedule,
)
from gradxform.schedules.restarts import cosine_annealing_warm_restarts, sgdr_schedule
from gradxform.schedules.swa import swalr_schedule

__all__ = [
    "chained_schedule",
    "constant_schedule",
    "cosine_annealing_schedule",
    "cosine_annealing_warm_restarts",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cyclic_schedule",
    "exponential_decay",
    "inverse_time_decay",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "multiplicative_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "swalr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]
