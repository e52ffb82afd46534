"""Running replica groups on the kernel under a SimPy clock, and `CompiledSimulation`, the engine.

SimPy still drives time: `run_batch` runs one SimPy process per replica group. By default
the whole episode is one compiled call at the group's episode event (a timeout of the
episode's horizon); ``granularity="slot"`` steps the group one slot per SimPy timeout
through a compiled per-slot kernel instead. Per-slot stepping pays one dispatch and one
host round trip per slot and the padding of the nested layout; see `benchmarks/kernel.py`
(``optimal_compiled_x64_slot_steps_tasks_per_s``) for the cost.

Per-episode metrics come from `mecsim.tasklog.episode_metrics`, so the compiled and the
Python path give the same tables.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import simpy

from ...arrivals import Trace, episode_trace
from ...config import Scenario
from ...engine import EpisodeResult
from ...jaxconfig import x64
from ...plugins import call_hook
from ...scheduling import SchedulerError, hook
from ...tasklog import TaskLog, episode_metrics
from .event_episode import run_episodes as run_event_episodes
from .layout import Tasks, compact_flat, compact_nested, expected_length, pad_trace, pick_length, slot_counts
from .scan import Outputs, compiled_episodes, compiled_slots, initial_carry, policy_key, static_policy
from .shape import Env, JaxPolicy, Spec, env_of

GRANULARITIES = ("episode", "slot")
LAYOUTS = ("auto", "flat", "nested")


@dataclass
class Replica:
    """One episode of one scenario (the seed is the scenario's)."""

    scenario: Scenario
    episode: int
    stream: str = "arrivals"
    trace: Trace | None = None

    def get_trace(self) -> Trace:
        if self.trace is None:
            self.trace = episode_trace(self.scenario, self.scenario.seed, self.episode, self.stream)
        return self.trace

    def get_speed(self) -> np.ndarray:
        """(T, 2, B): the episode's fault factors of capacities and rates per decision slot (all 1 without faults)."""
        sc = self.scenario
        realisation = sc.fault_profile(self.episode, self.stream)
        if realisation is None:
            return np.ones((sc.decision_slots, 2, sc.n_bs))
        shape = (sc.n_bs, sc.decision_slots, sc.slot_length)
        return np.stack(
            [realisation.slot_means("server", *shape), realisation.slot_means("link", *shape)], axis=1
        )


def stack_env(replicas: Sequence[Replica]) -> Env:
    """The replicas' numbers, stacked; with faults in the slotted model, each episode's per-slot speeds too."""
    envs = [env_of(r.scenario) for r in replicas]
    numbers = [
        np.stack([np.asarray(getattr(e, f), float) for e in envs])
        for f in Env._fields
        if f not in ("speed", "profile")
    ]
    # the slotted model's per-slot means; the event model takes the realisation itself (`fault_realisations`)
    slotted_faults = any(r.scenario.faults.active and r.scenario.model == "slotted" for r in replicas)
    return Env(*numbers, speed=np.stack([r.get_speed() for r in replicas]) if slotted_faults else None)


def fault_realisations(replicas: Sequence[Replica]) -> tuple[list, list[float]]:
    """Event model: each replica's fault realisation (`mecsim.faults.Profile`) and horizon (s), for
    `event_episode.with_faults`; empty without faults."""
    if not any(r.scenario.faults.active for r in replicas):
        return [], []
    horizons = [r.scenario.decision_slots * r.scenario.slot_length for r in replicas]
    return [r.scenario.fault_profile(r.episode, r.stream) for r in replicas], horizons


def _check_group(replicas: Sequence[Replica]) -> Spec:
    if not replicas:
        raise ValueError("no replicas to run")
    return Spec.of_group([r.scenario for r in replicas])


@dataclass
class BatchResult:
    """Kernel outputs of a replica group (NumPy arrays with a leading replica axis)."""

    tasks: Tasks
    outputs: Outputs
    served: np.ndarray  # (R, B) work served over the episode
    backlog: np.ndarray  # (R, B) backlog after the last decision slot
    wall_time: float

    def task_log(self, i: int, replica: Replica) -> TaskLog:
        """Replica ``i``'s TaskLog, in decision order (the Python path's layout)."""
        log = TaskLog(replica.scenario, replica.get_trace(), replica.episode)
        valid = self.tasks.valid[i]
        out = self.outputs
        log.subset[:] = out.subset[i][valid] > 0
        log.fractions[:] = out.fractions[i][valid]
        log.latency[:] = out.span[i][valid]
        log.failed[:] = out.failed[i][valid]
        log.reward[:] = out.reward[i][valid]
        log.decided[:] = True
        return log

    def aux(self, i: int):
        """Replica ``i``'s per-task aux outputs of the policy, in decision order (None without aux)."""
        if self.outputs.aux is None:
            return None
        valid = self.tasks.valid[i]
        return jax.tree.map(lambda a: np.asarray(a[i])[valid], self.outputs.aux)

    def metrics(self, i: int, replica: Replica, log: TaskLog | None = None) -> dict:
        sc = replica.scenario
        log = self.task_log(i, replica) if log is None else log
        horizon = sc.decision_slots * sc.slot_length
        return episode_metrics(log, self.served[i], np.asarray(sc.capacities, float) * 1.0, horizon)


def run_batch(
    replicas: Sequence[Replica],
    policy: JaxPolicy,
    *,
    keys: np.ndarray | None = None,
    granularity: str = "episode",
    layout: str = "auto",
    length: int | None = None,
    env: simpy.Environment | None = None,
) -> BatchResult:
    """Run a group of replicas (same static shape) in one vmapped kernel, under a SimPy clock.

    ``granularity="episode"``: the whole episode is one compiled call at the group's SimPy
    process start, followed by a timeout of the episode's horizon; ``"slot"``: one compiled
    call and one timeout of the slot length per slot (nested layout). ``layout="auto"`` is
    flat for whole episodes unless the policy prepares slots. ``length`` fixes the scan
    length (per slot when nested). ``keys``: raw PRNG key data per replica (default
    `policy_key`).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r}: allowed {', '.join(GRANULARITIES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: allowed {', '.join(LAYOUTS)}")
    started = time.perf_counter()
    base = _check_group(replicas)
    event = base.model == "event"
    if event and (granularity != "episode" or layout == "flat"):
        raise ValueError("the compiled event model runs whole episodes in the nested layout")
    if layout == "auto":
        layout = "flat" if granularity == "episode" and policy.prepare is None and not event else "nested"
    if layout == "flat" and (granularity == "slot" or policy.prepare is not None):
        raise ValueError("per-slot stepping and slot-preparing policies need the nested layout")
    first = replicas[0].scenario
    traces = [pad_trace(r.get_trace(), base.tasks_per_slot) for r in replicas]
    if layout == "flat":
        needed = int(max(np.maximum(slot_counts(tr, first.decision_slots), 1).sum() for tr in traces))
        expected = max(expected_length(r.scenario, "flat") for r in replicas)
        length = length or pick_length(("flat", base, len(replicas)), needed, 64, expected=expected)
        tasks = compact_flat(traces, first.decision_slots, length)
    else:
        needed = int(max(max(slot_counts(tr, first.decision_slots).max(initial=0), 1) for tr in traces))
        expected = max(expected_length(r.scenario, "nested") for r in replicas)
        length = length or pick_length(
            ("nested", base, len(replicas)), needed, 8, spread=1.5, expected=expected
        )
        tasks = compact_nested(traces, first.decision_slots, length)
    spec = base.with_length(length)
    envs = stack_env(replicas)
    if keys is None:
        keys = np.stack([policy_key(r.scenario.seed, r.episode, r.stream) for r in replicas])
    static = static_policy(policy)
    holder: dict[str, Any] = {}

    def process(sim_env: simpy.Environment):
        horizon = first.decision_slots * first.slot_length
        if event:
            holder["result"] = run_event_episodes(
                spec, static, envs, policy.params, keys, tasks, *fault_realisations(replicas)
            )
            yield sim_env.timeout(horizon)
            return
        if granularity == "episode":
            with x64():
                fn = compiled_episodes(spec, static, layout)
                out, (state, served) = jax.device_get(fn(envs, policy.params, keys, tasks))
            holder["result"] = out, state.backlog, served
            yield sim_env.timeout(horizon)
            return
        with x64():
            fn = compiled_slots(spec, static)
            carry = jax.vmap(lambda _: initial_carry(spec.n_bs))(jnp.arange(len(replicas)))
            device_tasks, device_env, device_keys = jax.device_put((tasks, envs, keys))
        outs = []
        for t in range(spec.decision_slots):
            with x64():
                carry, out = fn(device_env, policy.params, device_keys, carry, device_tasks, t)
            outs.append(out)
            yield sim_env.timeout(first.slot_length)
        with x64():
            out = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *outs) if outs else None
            out, (state, served) = jax.device_get((out, carry))
            holder["result"] = out, state.backlog, served

    sim_env = env if env is not None else simpy.Environment()
    sim_env.process(process(sim_env))
    sim_env.run()
    out, backlog, served = holder["result"]
    return BatchResult(tasks, Outputs(*out), served, backlog, time.perf_counter() - started)


# -- the engine side: a Simulation-like object on the kernel --------------------------------------
def jax_policy_of(scheduler) -> JaxPolicy | None:
    """The scheduler's JAX-native form, or None when it has none (or none that applies now)."""
    method = hook(scheduler, "jax_policy")
    return method() if method is not None else None


class CompiledSimulation:
    """Runs episodes of one scenario on the kernel, up to ``group`` episodes per vmapped call.

    The default group of 16 was the fastest on a 2-core Xeon (greedy optimal, default point:
    ~0.75 M tasks/s at 16 against ~0.55 M at 64, whose per-step arrays outgrow the L2 cache).

    A drop-in for `mecsim.engine.Simulation`: ``run_episode(e)`` returns an `EpisodeResult`.
    Episodes announced with ``plan`` (or the constructor's ``episodes``) are computed in
    groups ahead of the request; each result's wall time is its share of its group's.
    The scheduler's ``on_episode_end`` is called as each result is handed out.
    """

    engine = "compiled"  # the backend's name, recorded in result rows

    def __init__(
        self,
        scenario: Scenario,
        scheduler,
        policy: JaxPolicy | None = None,
        *,
        episodes: Iterable[int] = (),
        stream: str = "arrivals",
        group: int = 16,
        granularity: str = "episode",
    ):
        self.scenario = scenario
        self.scheduler = scheduler
        self.policy = policy if policy is not None else jax_policy_of(scheduler)
        if self.policy is None:
            raise SchedulerError(
                f"scheduler {getattr(scheduler, 'name', scheduler)!r} has no JAX-native form"
            )
        self.group = max(1, int(group))
        self.granularity = granularity
        self._planned: dict[str, list[int]] = {}
        self._done: dict[tuple[str, int], EpisodeResult] = {}
        self._group_sizes: set[int] = set()
        self.plan(episodes, stream)

    def plan(self, episodes: Iterable[int], stream: str = "arrivals") -> None:
        """Announce episodes that will be asked for, so that they run together."""
        queue = self._planned.setdefault(stream, [])
        queue.extend(e for e in episodes if e not in queue)

    def run_episode(
        self, episode: int, trace: Trace | None = None, stream: str = "arrivals"
    ) -> EpisodeResult:
        key = (stream, episode)
        if trace is not None:
            result = self.run_episodes([episode], stream, traces={episode: trace})[0]
        else:
            if key not in self._done:
                queue = self._planned.get(stream, [])
                batch = [episode]
                if episode in queue:
                    start = queue.index(episode)
                    batch = queue[start : start + self.group]
                    del queue[start : start + self.group]
                for r in self.run_episodes(batch, stream):
                    self._done[(stream, r.episode)] = r
            result = self._done.pop(key)
        call_hook(self.scheduler, "on_episode_end", episode, result.metrics, episode=episode)
        return result

    def run_episodes(
        self, episodes: Sequence[int], stream: str = "arrivals", traces: dict | None = None
    ) -> list[EpisodeResult]:
        """Run the episodes in one vmapped call (no scheduler hooks); results in the given order."""
        traces = traces or {}
        replicas = [Replica(self.scenario, e, stream, traces.get(e)) for e in episodes]
        # a smaller group (the last of a run) is padded to a size already compiled, instead of compiling anew
        sizes = [n for n in self._group_sizes if n >= len(replicas)]
        padded = replicas + [replicas[-1]] * (min(sizes) - len(replicas)) if sizes else replicas
        self._group_sizes.add(len(padded))
        batch = run_batch(padded, self.policy, granularity=self.granularity)
        share = batch.wall_time / len(replicas)
        results = []
        for i, rep in enumerate(replicas):
            log = batch.task_log(i, rep)
            results.append(EpisodeResult(rep.episode, log, batch.metrics(i, rep, log), share))
        return results


def run_scenarios(scenarios: Sequence[Scenario], episodes: int, policy: JaxPolicy, group: int = 16) -> dict:
    """Episodes 0..episodes-1 of every scenario on the kernel: {(scenario index, episode): (metrics, wall share)}.

    Every (scenario, episode) pair is a replica; replicas of similar length share vmapped calls of ``group``.
    A last, smaller call is filled up with copies of its last replica (whose outputs are dropped): it then
    runs on the kernel compiled for the others, rather than compiling one of its own (seconds, against a
    few episodes' work).
    """
    replicas = [(i, Replica(sc, e)) for i, sc in enumerate(scenarios) for e in range(episodes)]
    replicas.sort(key=lambda item: expected_length(item[1].scenario, "flat"))  # similar lengths share a call
    out: dict[tuple[int, int], tuple[dict, float]] = {}
    for start in range(0, len(replicas), group):
        chunk = replicas[start : start + group]
        filler = [chunk[-1][1]] * (group - len(chunk) if len(replicas) > group else 0)
        batch = run_batch([rep for _, rep in chunk] + filler, policy)
        share = batch.wall_time / len(chunk)
        for j, (i, rep) in enumerate(chunk):
            out[i, rep.episode] = (batch.metrics(j, rep), share)
    return out
