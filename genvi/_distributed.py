"""Multi-process training with JAX's own runtime (`jax.distributed`), and a local launcher.

Recipe (one process per host or per GPU): call `genvi.distributed.initialize(coordinator,
num_processes, process_id)` first thing in every process, load that process's equal-sized shard
of the data, and call `genvi.vi.fit(..., mesh="auto")` with the same arguments everywhere: the
mesh spans every process's devices, each process contributes its shard to the global data array,
and process 0 writes checkpoints and shows progress. `launch_local(n, fn, *args)` starts `n`
such processes on this machine (CPU collectives over loopback) to try it without a cluster.
"""

from __future__ import annotations

import importlib
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import jax

from ._errors import ConfigError, GenviError


def initialize(coordinator_address: str, num_processes: int, process_id: int) -> None:
    """`jax.distributed.initialize`, with gloo collectives when running on CPU."""
    if os.environ.get("JAX_PLATFORMS", "cpu").startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(spec_path: str) -> None:
    """Entry point of a `launch_local` process (`python -m genvi._distributed SPEC`)."""
    with open(spec_path, "rb") as fh:
        spec = pickle.load(fh)  # our own parent wrote it, for this process only
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')} "
                               f"--xla_force_host_platform_device_count={spec['devices']}")
    try:
        initialize(f"127.0.0.1:{spec['port']}", spec["count"], spec["index"])
        # import the function only now: its module may create arrays, which would start JAX's
        # backend before jax.distributed is initialised
        fn = importlib.import_module(spec["module"])
        for part in spec["qualname"].split("."):
            fn = getattr(fn, part)
        result = (True, fn(*spec["args"]))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        result = (False, traceback.format_exc())
    with open(spec["out"], "wb") as fh:
        pickle.dump(result, fh)


def launch_local(num_processes: int, fn: Callable, *args: Any, devices_per_process: int = 1,
                 timeout: float = 600.0) -> list[Any]:
    """Run `fn(*args)` in `num_processes` fresh processes joined by `jax.distributed` on loopback.

    `fn` must be defined at the top level of an importable module; each process is a fresh
    interpreter that initialises `jax.distributed` before importing it, and sees
    `jax.process_index()` and `devices_per_process` CPU devices. Returns the processes' return
    values in process order; raises `GenviError` with the traceback if one fails.
    """
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ConfigError(f"launch_local(num_processes={num_processes!r}): must be a positive integer")
    module, qualname = fn.__module__, fn.__qualname__
    if "<locals>" in qualname or module == "__main__":
        raise ConfigError(f"launch_local: {fn!r} must be defined at the top level of an importable module "
                          "(not in __main__ or inside a function)")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with tempfile.TemporaryDirectory(prefix="genvi-launch-") as tmp:
        procs = []
        for index in range(num_processes):
            spec = {"index": index, "count": num_processes, "port": port, "devices": devices_per_process,
                    "module": module, "qualname": qualname, "args": args, "out": f"{tmp}/out{index}.pkl"}
            with open(f"{tmp}/spec{index}.pkl", "wb") as fh:
                pickle.dump(spec, fh)
            procs.append(subprocess.Popen([sys.executable, "-m", "genvi._distributed", f"{tmp}/spec{index}.pkl"],
                                          env=env))
        try:
            for p in procs:
                p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise GenviError(f"launch_local: the processes did not finish within {timeout} s") from None
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        results = []
        for index in range(num_processes):
            try:
                with open(f"{tmp}/out{index}.pkl", "rb") as fh:
                    ok, value = pickle.load(fh)
            except FileNotFoundError:
                raise GenviError(f"launch_local: process {index} exited ({procs[index].returncode}) without a result") from None
            if not ok:
                raise GenviError(f"launch_local: process {index} failed:\n{value}")
            results.append(value)
    return results


if __name__ == "__main__":
    _worker(sys.argv[1])
