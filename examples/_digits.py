"""Shared by the examples: scikit-learn's digits data set and a small MLP in pure JAX.

The digits set (1,797 8x8 images of handwritten digits, 10 classes) ships with scikit-learn,
so nothing is downloaded. The model is a one-hidden-layer perceptron whose parameters are a
plain dict of dicts, ``{"hidden": {"w", "b"}, "out": {"w", "b"}}``, so that every gradxform
transformation sees an ordinary pytree.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx

NUM_FEATURES = 64
NUM_CLASSES = 10

Params = dict[str, dict[str, jax.Array]]


class Digits(NamedTuple):
    """Standardized features (float32) and integer labels, split once into train and test."""

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Digits:
    """The digits set, split (stratified, seeded) and standardized with the training statistics.

    Args:
      test_fraction: the share of the examples held out for testing.
      seed: the seed of the split, so every example sees the same split.

    Returns:
      A :class:`Digits` of device arrays.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    x, y = sklearn_load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    # Some border pixels are always 0 in the training set: leave them at 0 rather than divide by 0.
    std = np.where(std > 0, std, 1.0)
    return Digits(
        x_train=jnp.asarray((x_train - mean) / std, jnp.float32),
        y_train=jnp.asarray(y_train, jnp.int32),
        x_test=jnp.asarray((x_test - mean) / std, jnp.float32),
        y_test=jnp.asarray(y_test, jnp.int32),
    )


def init_mlp(key: jax.Array, hidden: int = 128) -> Params:
    """He-initialized weights for the ReLU layer, Glorot for the output layer, zero biases."""
    k_hidden, k_out = jax.random.split(key)
    w_hidden = jax.random.normal(k_hidden, (NUM_FEATURES, hidden)) * jnp.sqrt(2.0 / NUM_FEATURES)
    w_out = jax.random.normal(k_out, (hidden, NUM_CLASSES)) * jnp.sqrt(2.0 / (hidden + NUM_CLASSES))
    return {
        "hidden": {"w": w_hidden, "b": jnp.zeros(hidden)},
        "out": {"w": w_out, "b": jnp.zeros(NUM_CLASSES)},
    }


def logits(params: Params, x: jax.Array) -> jax.Array:
    """``relu(x W1 + b1) W2 + b2``."""
    h = jax.nn.relu(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return h @ params["out"]["w"] + params["out"]["b"]


def loss(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy: ``-mean_i log softmax(logits_i)[y_i]``."""
    log_probs = jax.nn.log_softmax(logits(params, x))
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def accuracy(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    """The share of examples whose largest logit is the label."""
    return jnp.mean(jnp.argmax(logits(params, x), axis=1) == y)


def epoch_batches(rng: np.random.Generator, num_examples: int, batch_size: int) -> np.ndarray:
    """One epoch of minibatch indices, shape ``(num_batches, batch_size)``.

    The examples are shuffled and the incomplete last batch is dropped, so every batch has the
    same shape and the jitted step compiles once.
    """
    num_batches = num_examples // batch_size
    return rng.permutation(num_examples)[: num_batches * batch_size].reshape(num_batches, -1)


def batch_schedule(
    seed: int, num_examples: int, batch_size: int, epochs: int
) -> Iterator[np.ndarray]:
    """``epochs`` epochs of :func:`epoch_batches` from one seeded generator."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        yield epoch_batches(rng, num_examples, batch_size)


def train_epoch(
    optimizer: gx.GradientTransformation,
    params: Params,
    opt_state: Any,
    data: Digits,
    batch_indices: jax.Array,
) -> tuple[Params, Any, jax.Array]:
    """One epoch of minibatch steps as a ``lax.scan``; returns the minibatch losses too.

    Pure, so callers may ``jit`` it (one compiled program per epoch, not per step) or ``vmap``
    it over a batch of optimizers' hyperparameters.

    Args:
      optimizer: a gradient transformation.
      params: the MLP's parameters.
      opt_state: the optimizer's state.
      data: the data set.
      batch_indices: ``(num_batches, batch_size)`` indices into the training set.

    Returns:
      ``(params, opt_state, losses)`` with ``losses`` of shape ``(num_batches,)``.
    """

    def step(carry, indices):
        params, opt_state = carry
        batch_loss, grads = jax.value_and_grad(loss)(
            params, data.x_train[indices], data.y_train[indices]
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (gx.apply_updates(params, updates), opt_state), batch_loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), batch_indices)
    return params, opt_state, losses
