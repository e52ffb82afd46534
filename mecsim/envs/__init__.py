"""Reinforcement-learning environments in pure JAX (functional: state in, state out), for checking the
learners of `mecsim.learning` on standard tasks."""
