"""Sharded `fit`: 8 simulated CPU devices and 2 processes reproduce the one-device run."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import genvi.distributed
import scale_worker

HERE = pathlib.Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, str(HERE / "scale_worker.py")], env=env, capture_output=True,
                         text=True, timeout=900, cwd=HERE)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("workload,mesh", [("vae", "auto"), ("enum", "auto"), ("iwae", "particles")])
def test_same_seed_same_losses_on_one_and_eight_devices(eight_devices, workload, mesh):
    one, many = np.array(eight_devices[f"{workload}_one"]), np.array(eight_devices[f"{workload}_{mesh}"])
    assert len(one) == len(many) == 10
    np.testing.assert_allclose(many, one, rtol=1e-5)


def test_uneven_batch_is_a_clear_error(eight_devices):
    assert "batch_size=60" in eight_devices["uneven"] and "multiple of 8" in eight_devices["uneven"]


def test_two_processes_with_split_data_match_one_process():
    shards = genvi.distributed.launch_local(2, scale_worker.process_shard, "enum", timeout=600)
    single = scale_worker.run("enum", None, steps=10)
    for losses in shards:  # every process sees the same (replicated) losses
        np.testing.assert_allclose(losses, single, rtol=1e-5)


def test_launch_local_needs_an_importable_function():
    with pytest.raises(genvi.ConfigError, match=r"must be defined at the top level"):
        genvi.distributed.launch_local(2, lambda: None)
