"""The scheduler plugin contract: what a scheduler sees, what it returns, and how it is found.

A scheduler is any object with ``decide(obs) -> fractions``. ``fractions`` is a length-B
array (zeros = server not used) or a `Decision`, which can also name a subset and leave
the fractions to the scenario's allocation rule, evaluated on the true state when the
task executes.

Optional capabilities are declared one way: a method of that name, which the `Scheduler`
base class sets to None; the engine looks each up with `hook` and uses it when it is not
None (an object without the base class simply lacks them):

* ``decide_slot(slot_obs) -> Decision`` — every decision of a slot at once from the
  start-of-slot state (the reference observation), in one call;
* ``on_slot_end(feedback)``, ``on_episode_end(episode, metrics)`` — learners' feedback;
* ``train(flag)``, ``save(path)``, ``load(path)`` — learning mode and checkpoints;
* ``jax_policy() -> JaxPolicy | None`` — the decision as a pure JAX function, which the
  compiled kernel runs (`mecsim.backends`); None when it does not apply right now;
* ``kernel_learner() -> KernelLearner | None`` — a learner's functions for training on the
  kernel (`mecsim.backends.kernel.training`); None where it trains on the SimPy path only.

Plugins are found and built by `mecsim.plugins`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .allocation import subset_masks

if TYPE_CHECKING:
    from .config import Scenario

FRACTION_TOLERANCE = 1e-6


class SchedulerError(ValueError):
    """A scheduler returned an invalid decision, or could not be found or built."""


MAX_SUBSET_BS = 16
"""The largest B whose 2^B − 1 server subsets a scheduler may enumerate (65 535; B = 20 would be ~10^6)."""


def require_subset_enumeration(scheduler: str, n_bs: int) -> None:
    """Refuse, naming the scheduler, a scenario too large for a scheduler that enumerates every subset."""
    if n_bs > MAX_SUBSET_BS:
        raise SchedulerError(
            f"scheduler {scheduler!r} enumerates every server subset: n_bs = {n_bs} would give "
            f"{2**n_bs - 1} actions; allowed n_bs <= {MAX_SUBSET_BS}. For larger scenarios use a scheduler "
            f"with a bounded action space (best-single, smcoedge, drlcoedge, ddrl-ats, ...)"
        )


def read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array`` (what schedulers are given: they cannot change the simulation through it)."""
    view = array.view()
    view.flags.writeable = False
    return view


def vars_of(record: Any) -> dict[str, np.ndarray]:
    """The arrays of an observation or feedback record, by field name (to name a field written to)."""
    return {
        name: getattr(record, name)
        for name in record.__slots__
        if isinstance(getattr(record, name), np.ndarray)
    }


@dataclass(slots=True)
class Observation:
    """What a scheduler sees when one task arrives (read-only by convention; not frozen, for speed).

    ``wait``, ``duration`` and ``split_duration`` are the delay model's terms: a fraction
    x_i sent to server i is expected to finish ``wait[i] + x_i * duration[i]`` seconds
    after the decision (``split_duration`` when the task is split over several servers).
    In the slotted model they are exact; in the event model they are estimates from the
    true queue and link state at decision time.
    """

    time: float
    slot: int
    bs: int
    task: int
    size: float  # Mbit
    density: float  # Gcycles/Mbit
    backlog: np.ndarray  # Gcycles per ES at the start of the slot (the reference observation)
    current_backlog: (
        np.ndarray
    )  # Gcycles per ES now, including work assigned earlier in the slot / in transit
    tx_backlog: np.ndarray  # seconds of upload already committed by this BS towards each ES
    wait: np.ndarray
    duration: np.ndarray
    split_duration: np.ndarray
    scenario: Scenario
    _evaluator: Any = field(default=None, repr=False, compare=False)
    episode: int = 0
    result: float = 0.0  # Mbit downloaded from the servers (0: no result download)

    @property
    def n_servers(self) -> int:
        return self.backlog.shape[0]

    def evaluate(
        self, masks: np.ndarray | None = None, rule: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fractions (K, B) and expected make-spans (K,) of candidate subsets (default: all 2^B - 1).

        Uses the delay model's own make-span rule and the scenario's allocation rule unless ``rule`` is given.
        """
        if masks is None:
            require_subset_enumeration("Observation.evaluate (every subset)", self.n_servers)
            masks = subset_masks(self.n_servers)
        return self._evaluator(self, masks, rule or self.scenario.allocation)


@dataclass(frozen=True, slots=True)
class SlotObservation:
    """Every task of one slot, in decision order, with the start-of-slot state."""

    time: float
    slot: int
    bs: np.ndarray  # (n,) arrival BS of each task
    task: np.ndarray  # (n,) task slot index
    size: np.ndarray  # (n,) Mbit
    density: np.ndarray  # (n,) Gcycles/Mbit
    backlog: np.ndarray  # (B,) Gcycles at the start of the slot
    scenario: Scenario
    episode: int = 0
    result: np.ndarray | None = None  # (n,) Mbit downloaded from the servers; None without downloads

    def __len__(self) -> int:
        return self.bs.shape[0]

    @classmethod
    def of_task(cls, obs: Observation) -> SlotObservation:
        """A one-task slot holding ``obs``'s task (a slot-wise scheduler asked task by task)."""
        return cls(
            obs.time,
            obs.slot,
            np.array([obs.bs]),
            np.array([obs.task]),
            np.array([obs.size]),
            np.array([obs.density]),
            obs.backlog,
            obs.scenario,
            obs.episode,
            None if obs.scenario.result_range is None else np.array([obs.result]),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """Which servers take part, and (optionally) what fraction each gets.

    ``fractions=None`` asks the delay model to allocate over ``subset`` with the scenario's
    rule, on the true state when the task executes. In a batch (``decide_slot``) both
    arrays carry a leading task axis.
    """

    subset: np.ndarray
    fractions: np.ndarray | None = None

    @classmethod
    def to(cls, server: int, n_servers: int) -> Decision:
        """The whole task on one server."""
        onehot = np.zeros(n_servers)
        onehot[_server_indices("Decision.to", [server], n_servers)] = 1.0
        return cls(onehot, onehot)

    @classmethod
    def split(cls, servers, n_servers: int) -> Decision:
        """Share the task over ``servers``; the allocation rule chooses the fractions."""
        mask = np.zeros(n_servers)
        mask[_server_indices("Decision.split", list(servers), n_servers)] = 1.0
        return cls(mask, None)


def _server_indices(helper: str, servers: list, n_servers: int) -> list[int]:
    bad = [
        s
        for s in servers
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < n_servers
    ]
    if bad or not servers:
        raise SchedulerError(
            f"{helper}: servers {servers} must be one or more integers between 0 and {n_servers - 1}"
            + (f" (bad: {bad})" if bad else "")
        )
    return [int(s) for s in servers]


@dataclass(frozen=True, slots=True)
class SlotFeedback:
    """What happened in one slot, for learners (one entry per task, in decision order)."""

    slot: int
    bs: np.ndarray
    task: np.ndarray
    size: np.ndarray
    density: np.ndarray
    backlog: np.ndarray  # (B,) start-of-slot backlog the slot's decisions saw
    subsets: np.ndarray  # (n, B)
    fractions: np.ndarray  # (n, B)
    makespan: np.ndarray  # raw make-span
    failed: np.ndarray
    reward: np.ndarray
    next_backlog: np.ndarray  # (B,) backlog at the start of the next slot
    next_sizes: np.ndarray  # (B, N) task sizes of the next slot (0 = no task)
    result: np.ndarray | None = None  # (n,) Mbit downloaded from the servers; None without downloads
    next_densities: np.ndarray | None = None  # (B, N) densities (Gcycles/Mbit) of the next slot


OPTIONAL_HOOKS = (
    "decide_slot",
    "on_slot_end",
    "on_episode_end",
    "train",
    "save",
    "load",
    "jax_policy",
    "kernel_learner",
)


def hook(scheduler: Any, name: str) -> Callable | None:
    """The scheduler's optional capability ``name`` (one of `OPTIONAL_HOOKS`), or None when it has none."""
    return getattr(scheduler, name, None)


class Scheduler:
    """Base class. Subclasses implement ``decide``; the optional capabilities are None until defined.

    A subclass opts in to one by defining the method, e.g. ``def on_slot_end(self, feedback)``:
    called after every slot with its decisions and rewards (`SlotFeedback`);
    ``on_episode_end(episode, metrics)`` after every episode; ``train(flag)`` switches between
    learning (True) and evaluation (False); ``save(path)`` / ``load(path)`` write and read learned
    parameters under a directory; ``decide_slot`` and ``jax_policy`` as in the module docstring.
    """

    name: str = "scheduler"
    decide_slot: Callable | None = None
    on_slot_end: Callable | None = None
    on_episode_end: Callable | None = None
    train: Callable | None = None
    save: Callable | None = None
    load: Callable | None = None
    jax_policy: Callable | None = None
    kernel_learner: Callable | None = None

    def __init__(self, scenario: Scenario, rng: np.random.Generator | None = None, **options: Any):
        if options:
            raise SchedulerError(f"scheduler {self.name!r}: unknown options {sorted(options)}")
        self.scenario = scenario
        self.rng = rng if rng is not None else np.random.default_rng(scenario.seed)

    def decide(self, obs: Observation) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


# -- validating decisions ------------------------------------------------------------------------
def normalise_decision(raw: Any, n_servers: int, scheduler_name: str) -> Decision:
    """Turn a scheduler's return value into a checked `Decision`, or raise `SchedulerError`.

    The checks run on short Python lists: for a handful of servers that is several times
    cheaper than a sequence of NumPy reductions, and this runs once per task.
    """
    if not isinstance(raw, Decision):
        fractions = _as_vector(raw, n_servers, scheduler_name, "fractions")
        values = fractions.tolist()
        _check_fractions(values, scheduler_name)
        return Decision((fractions > 0).astype(float), fractions)
    subset = _as_vector(raw.subset, n_servers, scheduler_name, "subset")
    members = subset.tolist()
    if not (set(members) <= {0.0, 1.0} and 1.0 in members):
        raise SchedulerError(
            f"scheduler {scheduler_name!r} returned subset {members}: need 0/1 entries with at least one server chosen"
        )
    if raw.fractions is None:
        return Decision(subset, None)
    fractions = _as_vector(raw.fractions, n_servers, scheduler_name, "fractions")
    values = fractions.tolist()
    _check_fractions(values, scheduler_name)
    if any(x > 0 and m == 0 for x, m in zip(values, members)):
        raise SchedulerError(
            f"scheduler {scheduler_name!r} gave fractions {values} outside its subset {members}"
        )
    return Decision(subset, fractions)


def _as_vector(value: Any, n_servers: int, scheduler_name: str, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise SchedulerError(f"scheduler {scheduler_name!r} returned {what} {value!r}: not numeric") from None
    if arr.shape != (n_servers,):
        raise SchedulerError(
            f"scheduler {scheduler_name!r} returned {what} {arr.tolist()} of shape {arr.shape}: "
            f"need ({n_servers},), one per edge server"
        )
    return arr


def _check_fractions(values: list[float], scheduler_name: str) -> None:
    total = sum(values)  # NaN or inf anywhere makes the sum non-finite
    if not math.isfinite(total):
        raise SchedulerError(f"scheduler {scheduler_name!r} returned non-finite fractions {values}")
    if min(values) < 0:
        raise SchedulerError(
            f"scheduler {scheduler_name!r} returned negative fractions {values}: each must be >= 0"
        )
    if abs(total - 1.0) > FRACTION_TOLERANCE:
        raise SchedulerError(
            f"scheduler {scheduler_name!r} returned fractions {values} summing to {total:.9g}: "
            f"they must sum to 1 (within {FRACTION_TOLERANCE})"
        )


def check_slot_decision(raw: Any, n_tasks: int, n_servers: int, scheduler_name: str) -> Decision:
    """Validate a batched decision from ``decide_slot``: subsets (n, B) and optional fractions (n, B)."""
    if not isinstance(raw, Decision):
        raw = Decision(np.asarray(raw, dtype=float) > 0, np.asarray(raw, dtype=float))
    subsets = np.asarray(raw.subset, dtype=float)
    if subsets.shape != (n_tasks, n_servers):
        raise SchedulerError(
            f"scheduler {scheduler_name!r}: decide_slot returned subsets of shape {subsets.shape}, "
            f"need ({n_tasks}, {n_servers})"
        )
    if not np.all((subsets == 0) | (subsets == 1)) or np.any(subsets.sum(axis=1) < 1):
        bad = int(
            np.flatnonzero(~np.all((subsets == 0) | (subsets == 1), axis=1) | (subsets.sum(axis=1) < 1))[0]
        )
        raise SchedulerError(
            f"scheduler {scheduler_name!r}: decide_slot subset of task {bad} is {subsets[bad].tolist()}: "
            f"need 0/1 entries with at least one server"
        )
    if raw.fractions is None:
        return Decision(subsets, None)
    fractions = np.asarray(raw.fractions, dtype=float)
    if fractions.shape != subsets.shape:
        raise SchedulerError(
            f"scheduler {scheduler_name!r}: decide_slot fractions of shape {fractions.shape}, need {subsets.shape}"
        )
    bad_rows = ~np.isfinite(fractions).all(axis=1) | (fractions < 0).any(axis=1)
    bad_rows |= np.abs(fractions.sum(axis=1) - 1.0) > FRACTION_TOLERANCE
    bad_rows |= ((fractions > 0) & (subsets == 0)).any(axis=1)
    if bad_rows.any():
        k = int(np.flatnonzero(bad_rows)[0])
        raise SchedulerError(
            f"scheduler {scheduler_name!r}: decide_slot fractions of task {k} are {fractions[k].tolist()} "
            f"for subset {subsets[k].tolist()}: need finite values >= 0, inside the subset, summing to 1"
        )
    return Decision(subsets, fractions)
