"""Which engine runs an episode: the one backend switch.

* ``"python"`` — the SimPy engine (`mecsim.engine.Simulation`) with the scheduler's Python
  decisions: every delay model, every scheduler;
* ``"compiled"`` — the slotted and the event model (faults included) on the compiled JAX
  kernel (`mecsim.backends.kernel`), for schedulers with a JAX-native form (``jax_policy``);
  learners train there too;
* ``"auto"`` (the default everywhere) — the kernel where it applies, else the SimPy engine.

`resolve` picks the episode engine and `resolve_trainer` the training loop. JAX is imported
only when the kernel may run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..config import Scenario
from ..engine import Simulation
from ..scheduling import SchedulerError, hook

ENGINES = ("auto", "python", "compiled")
DEFAULT_ENGINE = "auto"


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise SchedulerError(f"engine {engine!r}: allowed {', '.join(ENGINES)}")
    return engine


def why_not_compiled(scenario: Scenario, scheduler) -> str | None:
    """Why the kernel cannot run this scheduler on this scenario now (None: it can)."""
    if hook(scheduler, "jax_policy") is None or scheduler.jax_policy() is None:
        name = getattr(scheduler, "name", type(scheduler).__name__)
        return f"scheduler {name!r} has no JAX-native form (jax_policy) in its current mode"
    return None


def resolve(
    engine: str,
    scenario: Scenario,
    scheduler,
    *,
    episodes: Iterable[int] = (),
    stream: str = "arrivals",
    **options: Any,
):
    """The engine that runs ``scheduler``'s episodes of ``scenario``: a `Simulation` or a
    `CompiledSimulation` (both have ``run_episode``).

    ``"compiled"`` raises `SchedulerError` saying why when the kernel cannot run it; ``"auto"``
    falls back to the SimPy engine. ``episodes`` announces the episodes that will be asked
    for, so that the kernel runs them together.
    """
    check_engine(engine)
    if engine == "python":
        return Simulation(scenario, scheduler)
    why = why_not_compiled(scenario, scheduler)
    if why is not None:
        if engine == "compiled":
            raise SchedulerError(f"engine 'compiled': {why}")
        return Simulation(scenario, scheduler)
    from .kernel.simulation import CompiledSimulation

    return CompiledSimulation(scenario, scheduler, episodes=episodes, stream=stream, **options)


def resolve_trainer(engine: str, scenarios: Sequence[Scenario], scheduler_name: str, options: dict[str, Any]):
    """A `KernelTrainer` for these replicas, or None for the SimPy training loop.

    ``"compiled"`` raises `SchedulerError` when the scheduler cannot train on the kernel;
    ``"auto"`` falls back quietly.
    """
    check_engine(engine)
    if engine == "python" or not scenarios:
        return None
    from .kernel.training import KernelTrainer

    try:
        return KernelTrainer(list(scenarios), scheduler_name, options=options)
    except SchedulerError:
        if engine == "compiled":
            raise
        return None


def kernel_batch(engine: str, scenarios: Sequence[Scenario], scheduler_name: str, options: dict[str, Any]):
    """(schedulers, the one JAX policy they share) when the kernel may run these scenarios' episodes
    together, else None (then each runs on its own, through `resolve`).

    They may when the engine is not ``"python"``, all scenarios share the kernel's static shape
    (`kernel.shape.Spec.of_group`; N may differ), and every scheduler's JAX form is the same function
    with no params of its own.
    """
    check_engine(engine)
    if engine == "python" or not scenarios:
        return None
    from ..arrivals import stream
    from ..plugins import make_scheduler
    from .kernel.shape import Spec
    from .kernel.simulation import jax_policy_of

    schedulers = [
        make_scheduler(scheduler_name, sc, rng=stream(sc.seed, "scheduler"), **options) for sc in scenarios
    ]
    policies = [jax_policy_of(s) for s in schedulers]
    shared = policies[0]
    same = all(
        p is not None and p.decide == shared.decide and p.prepare == shared.prepare and p.params is None
        for p in policies
    )
    try:
        Spec.of_group(scenarios)
    except ValueError:
        return None
    return (schedulers, shared) if same else None
