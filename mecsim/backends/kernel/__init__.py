"""The delay models compiled with JAX: many replicas of whole episodes per call.

* `shape` — what a kernel is specialised on (`Spec`), the per-replica numbers (`Env`), and
  what a JAX-native policy sees (`JaxPolicy`, `KernelTask`, `SlotView`, `KernelContext`);
* `layout` — compacted task entries (flat and nested layouts) and scan lengths;
* `scan` — the slotted kernel: ``lax.scan`` over a replica's tasks, ``vmap`` over replicas;
* `event`, `event_episode` — the event model: FIFO links and servers as fixed-size state,
  advanced at each slot start; the decisions and episodes on it; `fault_speeds`, its faults;
* `simulation` — replica groups under a SimPy clock, and `CompiledSimulation`, the engine;
* `training` — learners trained on the kernel (`KernelTrainer`);
* `replay` — replaying recorded decisions (parity checks against the Python path).

A scheduler opts in with ``jax_policy() -> JaxPolicy`` (or None when its JAX form does not
apply right now, e.g. a learner in training mode); `mecsim.backends.resolve` decides.
"""

from .layout import Tasks, compact_flat, compact_nested, expected_length, pad_trace, pick_length, slot_counts
from .replay import replay_decide, replay_fractions_decide, replay_params
from .scan import Outputs, compiled_episodes, compiled_slots, policy_key, task_key
from .shape import Env, JaxPolicy, KernelContext, KernelTask, SlotView, Spec, context, env_of, slotted_params
from .simulation import (
    BatchResult,
    CompiledSimulation,
    Replica,
    jax_policy_of,
    run_batch,
    run_scenarios,
    stack_env,
)

__all__ = [
    "BatchResult",
    "CompiledSimulation",
    "Env",
    "JaxPolicy",
    "KernelContext",
    "KernelTask",
    "Outputs",
    "Replica",
    "SlotView",
    "Spec",
    "Tasks",
    "compact_flat",
    "compact_nested",
    "compiled_episodes",
    "compiled_slots",
    "context",
    "env_of",
    "expected_length",
    "jax_policy_of",
    "pad_trace",
    "pick_length",
    "policy_key",
    "replay_decide",
    "replay_fractions_decide",
    "replay_params",
    "run_batch",
    "run_scenarios",
    "slot_counts",
    "slotted_params",
    "stack_env",
    "task_key",
]
