"""The learning library: learners as pure JAX functions over a learner-state pytree, written once.

The SimPy path calls these functions one slot at a time (the scheduler plugins in
``schedulers/``); the compiled kernel calls the same functions inside ``lax.scan``, vmapped
over replicas (`mecsim.backends.kernel.training`). With the same transitions and keys both
take the same steps.

* `config` — `LearnerConfig`: validated, documented hyper-parameters, reference defaults;
* `networks` — the Flax networks and their reference initialisation;
* `heads` — action heads: all subsets, one collaborator, fixed k-subsets, top-k;
* `replay` — per-agent replay ring buffers (fill, sample);
* `targets` — target-network updates: hard copies (DQN), soft Polyak updates (actor-critic);
* `dqn` — the per-BS DQN of AMCoEdge and its baselines: act, store, learn, exploration.

A second algorithm family (actor-critic with an entropy temperature and soft target
updates) adds its own module beside `dqn`, reusing `replay`, `heads`, `targets` and the
kernel's `KernelLearner` protocol.
"""
