"""Wrappers: transformations built around other transformations, one module per concern.

``masking`` (masks, groups, freezing), ``accumulation`` (gradient accumulation),
``hyperparams`` (hyperparameters in the state), ``phases`` (switching transformations),
``averaging`` (parameter averages, Lookahead), ``guards`` (skipping non-finite steps),
``loss_scale`` (dynamic loss scaling), ``sharding`` (multi-device: all-reduce, ZeRO-1) with
the analysis that decides whether a transformation may run on slices (``elementwise``, the
jaxpr walk in ``jaxpr_walk``, its ``marks`` and the ``primitive_table``).
"""
