"""A training call's replicas split over CPU devices (`mecsim.backends.kernel.devices`).

Each device runs its replicas as an ordinary call of that many replicas: the results are those of training
the groups apart, to the bit.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mecsim.backends.kernel.devices import OnDevices, Parts, at_most, joined, replica_devices
from mecsim.backends.kernel.training import KernelTrainer
from mecsim.config import ConfigError, Scenario

SLOTTED = Scenario(
    n_bs=3, capacities=(10.0, 20.0, 30.0), rates=(30.0, 40.0, 50.0), tasks_per_slot=6, slots=8, arrival_prob=0.5,
    seed=4,
)  # fmt: skip
EVENT = SLOTTED.replace(model="event")
DQN = dict(learn_start=5, learn_every=2, replace_target_iter=3, memory_size=40, greedy_increment=0.05)
SAC = dict(learn_start=5, memory_size=40, batch_size=8)


def test_the_process_has_two_cpu_devices():
    assert len(jax.local_devices(backend="cpu")) == 2  # tests/conftest.py asks for them


@pytest.mark.parametrize(
    "replicas, limit, want", [(8, None, 2), (4, None, 2), (5, None, 1), (1, None, 1), (8, 1, 1), (6, 2, 2)]
)
def test_replicas_go_to_the_most_devices_that_divide_them(replicas, limit, want):
    assert replica_devices(replicas, limit) == want


def trained(scenario, name, seeds, options, devices=None, episodes=4):
    trainer = KernelTrainer(scenario, name, seeds, options, devices=devices)
    tables = trainer.run(episodes, timing=False)
    return trainer, tables


@pytest.mark.parametrize(
    "scenario, name, options",
    [(SLOTTED, "amcoedge", DQN), (EVENT, "amcoedge", DQN), (SLOTTED, "ddrl-amsa", SAC)],
    ids=["slotted-dqn", "event-dqn", "slotted-sac"],
)
def test_a_split_call_trains_each_device_s_replicas_as_a_call_of_them_alone(scenario, name, options):
    split, split_tables = trained(scenario, name, [0, 1, 2, 3], options)
    assert split.devices == 2
    halves = [trained(scenario, name, seeds, options, devices=1) for seeds in ([0, 1], [2, 3])]
    assert all(h.devices == 1 for h, _ in halves)
    assert split.learner_seeds == [s for h, _ in halves for s in h.learner_seeds]
    for got, want in zip(split_tables, [t for _, tables in halves for t in tables]):
        np.testing.assert_array_equal(got["mean_makespan"], want["mean_makespan"])
        np.testing.assert_array_equal(got["failure_rate"], want["failure_rate"])
    assert all(split.counters == h.counters for h, _ in halves)
    assert int(split.counters[1]) > 0  # the learners updated
    whole = jax.tree.map(np.asarray, split.state)
    parts = jax.tree.map(
        lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *[h.state for h, _ in halves]
    )
    for got, want in zip(jax.tree.leaves(whole), jax.tree.leaves(parts)):
        np.testing.assert_array_equal(got, want)


def test_bad_device_counts_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="devices = 0: must be a whole number >= 1"):
        KernelTrainer(SLOTTED, "amcoedge", [0, 1], devices=0)
    monkeypatch.setenv("MECSIM_CPU_DEVICES", "two")
    with pytest.raises(ConfigError, match=r"\$MECSIM_CPU_DEVICES = 'two': must be a whole number >= 1"):
        replica_devices(4)


def test_on_devices_splits_the_replica_axis_and_refuses_an_input_without_one():
    double = OnDevices(jax.jit(lambda x, n: (x * n, n + 1)), 2, (False, True), (False, True))
    out, shared = double(np.arange(4.0), 3)
    assert isinstance(out, Parts) and [p.devices() for p in out] == [{d} for d in jax.local_devices()[:2]]
    np.testing.assert_array_equal(joined(out), np.arange(4.0) * 3)
    assert int(shared) == 4
    again, _ = double(out, 2)  # parts stay on their devices from call to call
    np.testing.assert_array_equal(joined(again), np.arange(4.0) * 6)
    with pytest.raises(ValueError, match=r"shape \(3,\) has no replica axis divisible by 2"):
        double(np.arange(3.0), 3)


def test_the_default_device_count_is_the_usable_cores_up_to_eight(monkeypatch):
    from mecsim import jaxconfig

    monkeypatch.delenv("MECSIM_CPU_DEVICES")
    monkeypatch.setattr(jaxconfig.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert jaxconfig.requested_cpu_devices() == jaxconfig.DEFAULT_CPU_DEVICES_MAX == 8
    monkeypatch.setattr(jaxconfig.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert jaxconfig.requested_cpu_devices() == 3
    monkeypatch.setenv("MECSIM_CPU_DEVICES", "12")
    assert jaxconfig.requested_cpu_devices() == 12


def test_a_sweep_worker_never_splits_a_batch(monkeypatch):
    """A batch's rows must not depend on the worker machine's cores: `compute_batch` runs within at_most(1)."""
    import mecsim.training
    from mecsim.sweep.worker import compute_batch

    with at_most(1):
        assert replica_devices(8) == 1
    assert replica_devices(8) == 2
    seen = []

    def train_many(scenarios, *args, **kwargs):
        seen.append(replica_devices(len(scenarios)))
        raise RuntimeError("stop here")

    monkeypatch.setattr(mecsim.training, "train_many", train_many)
    payload = dict(
        scheduler="amcoedge",
        episodes=1,
        eval_episodes=0,
        options={},
        timing=False,
        engine="auto",
        learner=True,
    )
    payloads = [dict(payload, scenario=SLOTTED.replace(seed=s).model_dump()) for s in (0, 1)]
    with pytest.raises(RuntimeError, match="stop here"):
        compute_batch(payloads)
    assert seen == [1]
