"""Learner hyper-parameters: one validated, immutable config per learner (pydantic, like `Scenario`).

A config's defaults are the reference code's values; every field carries a docstring.
Schedulers build theirs from ``--option key=value`` pairs with `LearnerConfig.from_options`,
which refuses an unknown option or an invalid value with a message naming the scheduler,
the option, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..scheduling import SchedulerError


class LearnerConfig(BaseModel):
    """Base of the learners' configs: frozen (hashable, so it can key compiled functions), no extra keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    @classmethod
    def from_options(cls, scheduler: str, options: dict[str, Any]) -> LearnerConfig:
        """Build from option pairs (values may be strings, as typed on the command line)."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as err:
            raise SchedulerError(_format(scheduler, cls, err)) from None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _format(scheduler: str, cls: type[LearnerConfig], err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        name = ".".join(str(p) for p in e["loc"][:1]) or "options"
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown options ['{name}']; known: {', '.join(cls.model_fields)}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"option {name} = {e.get('input')!r}: {msg}")
    return f"scheduler {scheduler!r}: " + "; ".join(dict.fromkeys(problems))
