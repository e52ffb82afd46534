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
* `dqn` — the per-BS DQN of AMCoEdge and its baselines: act, store, learn, exploration;
* `diffusion` — the VP denoising chain of the diffusion policies (LAD-TS, D2SAC);
* `sac` — per-BS discrete soft actor-critic (twin critics, soft targets, learned temperature)
  with an MLP or a diffusion actor: DDRL-ATS / LAD-TS, D2SAC-TS, SAC-TS, DDRL-AMSA.

Both families implement the kernel's `KernelLearner` protocol and reuse `replay`,
`heads` and `targets`.
"""
