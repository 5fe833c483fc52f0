"""Data-parallel training across two processes (jax.distributed, Gloo CPU collectives).

Two Python processes, each with one CPU device, join one job through a coordinator on a free
local port and train the same model on their halves of every batch (see
tests/_multiprocess_worker.py). Both must end with the same params, equal to one process
training on the whole batches. The workers run in float64, so the only difference from the
single-process run is the order in which the halves' gradients are added.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import _multiprocess_worker as worker
import jax
import numpy as np
import pytest

WORKER = Path(__file__).with_name("_multiprocess_worker.py")
TIMEOUT_S = 120


def _free_port() -> int:
    # The port is free when we look; another program could take it before the coordinator
    # binds it, which would show as a failure to connect, with the workers' output.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_workers(tmp_path: Path) -> list[Path]:
    """Runs the two workers to completion; fails the test with their output otherwise."""
    port = _free_port()
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device per process (conftest asks for 8 here)
    env["JAX_PLATFORMS"] = "cpu"
    outputs = [tmp_path / f"process{i}.npz" for i in range(worker.NUM_PROCESSES)]
    logs = [tmp_path / f"process{i}.log" for i in range(worker.NUM_PROCESSES)]
    processes = []
    failure = None
    try:
        for i in range(worker.NUM_PROCESSES):
            with open(logs[i], "w") as log:  # the child keeps its own handle
                processes.append(
                    subprocess.Popen(
                        [sys.executable, str(WORKER), str(port), str(i), str(outputs[i])],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=WORKER.parent,
                    )
                )
        deadline = time.monotonic() + TIMEOUT_S
        # Poll both: when one fails, its peer would wait for it until the timeout.
        while failure is None and any(p.poll() is None for p in processes):
            failed = [i for i, p in enumerate(processes) if p.poll() not in (None, 0)]
            if failed:
                failure = f"process {failed[0]} exited with code {processes[failed[0]].poll()}"
            elif time.monotonic() > deadline:
                failure = f"timed out after {TIMEOUT_S} s"
            else:
                time.sleep(0.1)
        if failure is None and any(p.returncode != 0 for p in processes):
            failure = f"exit codes {[p.returncode for p in processes]}"
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    if failure is not None:
        shown = [
            f"--- process {i} (stdout and stderr) ---\n{log.read_text()[-6000:]}"
            for i, log in enumerate(logs)
        ]
        pytest.fail(f"two-process training failed: {failure}\n" + "\n".join(shown))
    return outputs


def test_two_processes_train_like_one(tmp_path, x64):
    outputs = _run_workers(tmp_path)
    results = [dict(np.load(path)) for path in outputs]
    # The all-reduce hands both processes the same sums: their params agree bit for bit.
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)

    params, x, y = worker.make_problem()
    expected = jax.tree.map(np.asarray, worker.train_single(params, x, y))
    for how in ("jit", "zero"):
        for name, want in expected.items():
            got = results[0][f"{how}/{name}"]
            assert got.dtype == np.float64
            # float64 sums of 16 terms in another order, carried through 12 steps of clipped
            # Adam: differences of ~1e-15, far inside 1e-10.
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"{how} {name}")
        moved = np.abs(results[0][f"{how}/w1"] - params["w1"]).max()
        assert moved > 0.1, "training did not move the params"
