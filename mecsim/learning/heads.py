"""Action heads: how a learner's discrete actions map to subsets of edge servers.

A head knows its number of actions, how many action indices one decision takes (``width``:
1, or k for a top-k head), the greedy choice from Q-values, a uniformly random choice,
and the 0/1 subset (B,) of each action taken at a BS. The methods are pure JAX (traced
under `mecsim.jaxconfig.x64`, so subsets come out in float64 like the delay model).

* `AllSubsets` — every non-empty subset (AMCoEdge; `mecsim.allocation.subset_masks` order);
* `OneCollaborator` — a server index: the arrival BS's own server means local only,
  another means the pair {local, it} (DRLCoEdge, RandCoEdge);
* `FixedKSubsets` — the C(B, k) k-subsets in lexicographic order (the SMCoEdge copy);
* `TopK` — one Q-value per server; the k servers with the largest Q (the original SMCoEdge).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import jax
import jax.numpy as jnp
import numpy as np

from ..allocation import subset_masks


@dataclass(frozen=True)
class ActionHead:
    n_bs: int

    width = 1

    @property
    def n_actions(self) -> int:
        raise NotImplementedError

    def greedy(self, q):
        """Greedy action indices (n, width) from Q (n, n_actions)."""
        return jnp.argmax(q, axis=1)[:, None]

    def random(self, key, n: int):
        """Uniformly random action indices (n, width)."""
        return jax.random.randint(key, (n, 1), 0, self.n_actions)

    def subsets(self, actions, bs):
        """0/1 subset masks (n, B) of action indices (n, width) taken at BSs ``bs`` (n,)."""
        raise NotImplementedError


@dataclass(frozen=True)
class AllSubsets(ActionHead):
    @property
    def n_actions(self) -> int:
        return 2**self.n_bs - 1

    def subsets(self, actions, bs):
        return jnp.asarray(subset_masks(self.n_bs))[actions[:, 0]]


@dataclass(frozen=True)
class OneCollaborator(ActionHead):
    @property
    def n_actions(self) -> int:
        return self.n_bs

    def subsets(self, actions, bs):
        eye = jnp.asarray(np.eye(self.n_bs))
        return jnp.maximum(eye[bs], eye[actions[:, 0]])


@dataclass(frozen=True)
class FixedKSubsets(ActionHead):
    k: int = 3

    @property
    def n_actions(self) -> int:
        return comb(self.n_bs, self.k)

    def table(self) -> np.ndarray:
        masks = subset_masks(self.n_bs)
        return masks[masks.sum(axis=1) == self.k]  # lexicographic within a size

    def subsets(self, actions, bs):
        return jnp.asarray(self.table())[actions[:, 0]]


@dataclass(frozen=True)
class TopK(ActionHead):
    k: int = 3

    @property
    def width(self) -> int:  # the k chosen servers, in the order they were chosen
        return self.k

    @property
    def n_actions(self) -> int:
        return self.n_bs

    def greedy(self, q):
        return jnp.argsort(-q, axis=1, stable=True)[:, : self.k]

    def random(self, key, n: int):
        return jnp.argsort(jax.random.uniform(key, (n, self.n_bs)), axis=1)[:, : self.k]

    def subsets(self, actions, bs):
        return jax.nn.one_hot(actions, self.n_bs, dtype=jnp.float64).sum(axis=1)
