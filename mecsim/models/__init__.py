"""The delay models: how a decision turns into delays, as SimPy processes over one episode.

* `slotted` — the reference's accounting as pure array equations (NumPy or JAX), and
  `slotted_model.SlottedModel`, the process that applies them slot by slot;
* `event_model.EventModel` — FIFO links and FIFO edge servers, every transfer and service
  its own event;
* `base.DelayModel` — what both share: the slot loop, observations, decision validation,
  the task log and learner feedback.
"""

from __future__ import annotations

from ..config import Scenario
from .base import DelayModel


def make_model(scenario: Scenario, scheduler) -> DelayModel:
    """The delay model named by ``scenario.model``."""
    if scenario.model == "slotted":
        from .slotted_model import SlottedModel

        return SlottedModel(scenario, scheduler)
    from .event_model import EventModel

    return EventModel(scenario, scheduler)
