"""Finding, building and calling scheduler plugins, with an error that says where when a plugin fails.

Plugins are found by name in the ``mecsim.schedulers`` entry-point group, or by import path
``package.module:ClassName`` (a user's own file on the Python path works as is). A plugin
class need not derive from `Scheduler`: any class with ``decide(observation)`` works; it is
built with the scenario, the random generator and the options its constructor accepts.

Whatever a plugin raises (at import, when built, or inside ``decide`` and the other hooks)
reaches the user as a `PluginError` naming the scheduler, what it was doing, and where in
the simulation (episode, slot, BS, task); a write into a read-only observation names the
field.
"""

from __future__ import annotations

import importlib
import inspect
import linecache
import re
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import numpy as np

from .scheduling import SchedulerError

if TYPE_CHECKING:
    from .config import Scenario

ENTRY_POINT_GROUP = "mecsim.schedulers"
OBSERVATION_FIELDS = (
    "split_duration",
    "current_backlog",
    "tx_backlog",
    "duration",
    "backlog",
    "wait",
    "size",
    "density",
    "task",
    "bs",
)  # longest first: `.duration` must not match `.split_duration`


class PluginError(SchedulerError):
    """Code of a scheduler plugin raised an exception; the message says which scheduler, doing what, where."""


def available_schedulers() -> dict[str, Any]:
    """Entry points of every installed scheduler plugin, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _failed(name: str, doing: str, err: BaseException) -> PluginError:
    return PluginError(f"scheduler {name!r}: {doing} failed: {type(err).__name__}: {err}")


def resolve_scheduler(name: str) -> type:
    """The scheduler class for a registered name or an import path ``package.module:ClassName``."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise SchedulerError(f"scheduler {name!r}: cannot import module {module_name!r}: {err}") from None
        except Exception as err:  # noqa: BLE001 - a SyntaxError or any error raised by the module's own code
            raise _failed(name, f"importing module {module_name!r}", err) from err
        try:
            cls = getattr(module, attr)
        except AttributeError:
            raise SchedulerError(
                f"scheduler {name!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    else:
        registry = available_schedulers()
        if name not in registry:
            known = ", ".join(sorted(registry)) or "(none installed)"
            raise SchedulerError(
                f"scheduler {name!r} is not registered; known: {known}; or give an import path package.module:ClassName"
            )
        try:
            cls = registry[name].load()
        except Exception as err:  # noqa: BLE001 - a broken plugin package
            raise _failed(name, f"loading entry point {registry[name].value!r}", err) from err
    if not inspect.isclass(cls):
        raise SchedulerError(
            f"scheduler {name!r}: {cls!r} is not a class; give a class with decide(observation)"
        )
    from .scheduling import Scheduler

    decide = getattr(cls, "decide", None)
    if not callable(decide) or decide is Scheduler.decide:
        raise SchedulerError(f"scheduler {name!r}: {cls.__qualname__} has no decide(observation) method")
    return cls


def make_scheduler(name: str, scenario: Scenario, rng: np.random.Generator | None = None, **options: Any):
    """Build a scheduler by name; the instance's ``name`` is set to what the user asked for.

    A class without the `Scheduler` base gets the scenario, ``rng`` and the options its
    constructor takes; options it cannot take are refused.
    """
    cls = resolve_scheduler(name)
    args, kwargs = _constructor_arguments(cls, name, scenario, rng, options)
    try:
        scheduler = cls(*args, **kwargs)
    except SchedulerError:
        raise
    except Exception as err:  # noqa: BLE001 - the plugin's own constructor
        raise _failed(name, "building it", err) from err
    try:
        scheduler.name = name
    except AttributeError:
        pass
    return scheduler


def _constructor_arguments(cls: type, name: str, scenario, rng, options: dict[str, Any]):
    from .scheduling import Scheduler

    if issubclass(cls, Scheduler):
        return (scenario,), {"rng": rng, **options}
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a builtin or C class: assume it takes nothing
        params = {}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    args = (scenario,) if positional and positional[0].name != "rng" else ()
    kwargs = {"rng": rng} if "rng" in params or takes_any else {}
    unknown = sorted(k for k in options if k not in params and not takes_any)
    if unknown:
        raise SchedulerError(
            f"scheduler {name!r}: unknown options {unknown}; {cls.__qualname__} takes none of them"
        )
    return args, {**kwargs, **options}


def call_hook(scheduler: Any, hook: str, *args: Any, **place: Any) -> Any:
    """Call the scheduler's optional capability ``hook`` if it has one (else return None); an error it
    raises is reported with the scheduler's name, the hook and ``place``."""
    fn = getattr(scheduler, hook, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - the plugin's own code
        raise plugin_error(getattr(scheduler, "name", type(scheduler).__name__), hook, err, **place) from err


def where(**place: Any) -> str:
    """``episode 3, slot 12, BS 1, task 7``: the place of a failure (None parts left out)."""
    return ", ".join(
        f"{'BS' if key == 'bs' else key} {value}" for key, value in place.items() if value is not None
    )


def plugin_error(
    name: str, hook: str, err: BaseException, fields: dict[str, np.ndarray] | None = None, **place: Any
) -> SchedulerError:
    """The error to raise when ``hook`` of scheduler ``name`` raised ``err`` at ``place``.

    A rejected write into a read-only observation array (``fields``: the observation's arrays)
    names the field and says how to change a copy instead.
    """
    at = where(**place)
    if isinstance(err, ValueError) and "read-only" in str(err):
        field = _written_field(err, fields or {})
        what = f"field {field!r} of its observation" if field else "its observation"
        example = field or "wait"
        return PluginError(
            f"scheduler {name!r} wrote into {what} in {hook} ({at}): observations are read-only, so that a "
            f"scheduler cannot change the simulation; copy a field to change it, e.g. np.array(obs.{example})"
        )
    if isinstance(err, SchedulerError):
        text = str(err) if str(err).startswith(f"scheduler {name!r}") else f"scheduler {name!r}: {err}"
        return type(err)(f"{text} (in {hook}, {at})")
    return PluginError(f"scheduler {name!r} raised {type(err).__name__} in {hook} ({at}): {err}")


def _written_field(err: BaseException, fields: dict[str, np.ndarray]) -> str | None:
    """The observation field a failed write went to: named on the line's target, or aliased by a local."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return None
    line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno)
    target = re.split(r"(?<![=!<>])=(?!=)", line, maxsplit=1)[0] if "=" in line else line
    for name in OBSERVATION_FIELDS:
        if name in fields and re.search(rf"\.{name}\b", target):
            return name
    for value in tb.tb_frame.f_locals.values():
        if isinstance(value, np.ndarray):
            for name in OBSERVATION_FIELDS:
                if name in fields and np.shares_memory(value, fields[name]):
                    return name
    return None
