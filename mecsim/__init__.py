"""mecsim: collaborative mobile edge computing simulator for AIGC services, with pluggable schedulers.

The public API:

* `Scenario` — a validated experiment point (``Scenario(deadline=0.5)``, `load_scenario` for TOML);
* `Scheduler`, `Observation`, `SlotObservation`, `Decision` — the plugin contract;
* `run` — run a scheduler for some episodes: (per-episode table, per-task table or None);
* `train` — train a learner online, then evaluate it greedily (`TrainingResult`);
* `load` — a results file or a sweep's directory of parts as one DataFrame.

>>> import mecsim
>>> episodes, _ = mecsim.run(mecsim.Scenario(slots=3, tasks_per_slot=4), "local", 1, progress=False)
>>> int(episodes["n_tasks"].iloc[0]) > 0
True
"""

from .config import Scenario, load_scenario
from .plugins import make_scheduler
from .results import load
from .runner import run
from .scheduling import Decision, Observation, Scheduler, SlotObservation
from .training import TrainingResult, train
from .version import __version__

__all__ = [
    "Decision",
    "Observation",
    "Scenario",
    "Scheduler",
    "SlotObservation",
    "TrainingResult",
    "__version__",
    "load",
    "load_scenario",
    "make_scheduler",
    "run",
    "train",
]
