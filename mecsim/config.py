"""Scenario configuration: one validated, immutable description of an experiment point.

A `Scenario` is built from keyword arguments, a TOML file, or dotted ``key=value``
overrides (the CLI's ``--set``). Every invalid value raises `ConfigError`, whose
message names the field, the value and what is allowed.

The environment *variant* (`EnvVariant`) gathers the accounting differences between
the published reference environments (reference spec §4). A named preset fills them
in; explicitly given flags override the preset.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from .faults import Faults, Profile

DelayModel = Literal["slotted", "event"]
AllocationRule = Literal["cwa", "hecwa", "waterfill"]
PresetName = Literal["amcoedge", "randcoedge", "drlcoedge", "smcoedge", "optimal", "dedgeai"]
ArrivalProcess = Literal["bernoulli", "uniform_count"]
Workload = Literal["density", "steps"]
TauClamp = Literal["none", "multi", "always"]
DeadlinePolicy = Literal["keep", "drop"]
LinkTopology = Literal["pair", "destination"]


class ConfigError(ValueError):
    """A scenario field has an invalid value; the message names field, value and allowed values."""


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


# Numbers of a scenario: finite (the models set allow_inf_nan=False) and never a boolean, which
# pydantic would otherwise read as 0 or 1.
Number = Annotated[float, BeforeValidator(_not_a_boolean)]
Count = Annotated[int, BeforeValidator(_not_a_boolean)]


class EnvVariant(BaseModel):
    """Accounting flags of the slotted model (reference spec §1.4, §4)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    wait_clip_to_deadline: bool = False
    """W_i := min(W_i, deadline) (RandCoEdge, DRLCoEdge, SMCoEdge copies)."""
    local_wait_includes_tau: bool = False
    """The local server's wait also includes the source BS's transmission backlog τ_b (DRLCoEdge)."""
    local_upload_in_split: bool = False
    """In a split decision the local server's duration includes the upload d/r_b (DRLCoEdge)."""
    tau_counts_local: bool = False
    """τ_b grows by the local member's share too (x_b·d/r_b), not only by remote members."""
    tau_clamp: TauClamp = "multi"
    """Where τ_b is clamped to the slot length: only after split decisions (AMCoEdge), never, or always."""
    fail_penalty: Number = Field(10.0, ge=0)
    """A failed task's reward is -fail_penalty·deadline (10 in AMCoEdge, 2 in DRLCoEdge/SMCoEdge)."""
    makespan_counts_idle: bool = True
    """Servers of the chosen subset whose fraction is 0 still add their wait to the make-span max."""
    enqueue_failed_work: bool = True
    """A failed task's work still loads the queues (the reference never drops it)."""
    remote_wait_includes_tau: bool = True
    """A remote server's wait includes the source BS's upload backlog τ_b (False: DEdgeAI has no
    transmission queue)."""
    local_download: bool = True
    """With result downloads (``result_range``), the local server's share pays res/r_b too (DEdgeAI)."""

    @model_serializer(mode="wrap")
    def _serialize(self, handler) -> dict[str, Any]:
        return _drop_later_defaults(self, handler(self), _LATER_VARIANT_FIELDS)

    def structural(self) -> EnvVariant:
        """The flags that shape the computation: this variant with the failure penalty zeroed.

        The penalty is a number the compiled kernel takes per replica, so replicas that differ
        only in it share one compiled kernel, which is specialised on the rest.
        """
        return self.model_copy(update={"fail_penalty": 0.0})


PRESETS: dict[str, dict[str, Any]] = {
    "amcoedge": dict(),
    "randcoedge": dict(wait_clip_to_deadline=True, tau_counts_local=True, tau_clamp="none", fail_penalty=2.0),
    "drlcoedge": dict(
        wait_clip_to_deadline=True,
        local_wait_includes_tau=True,
        local_upload_in_split=True,
        tau_counts_local=True,
        tau_clamp="none",
        fail_penalty=2.0,
    ),
    "smcoedge": dict(wait_clip_to_deadline=True, tau_counts_local=True, tau_clamp="none", fail_penalty=2.0),
    "optimal": dict(tau_clamp="none"),
    "dedgeai": dict(tau_clamp="none", remote_wait_includes_tau=False),
}

DEDGEAI_CAPACITIES = (50, 25, 18, 32, 28, 21, 50, 17, 44, 41, 21, 31, 41, 36, 30, 47, 49, 13, 48, 14)
"""The reference's ``np.random.seed(2); randint(10, 51, 20)`` (spec §6.1)."""
DEDGEAI_RATES = (
    499,
    478,
    461,
    416,
    473,
    408,
    500,
    462,
    427,
    430,
    480,
    407,
    476,
    415,
    453,
    480,
    427,
    444,
    477,
    475,
)
"""The reference's ``np.random.seed(5); randint(400, 501, 20)`` (spec §6.1)."""

PRESET_SCENARIOS: dict[str, dict[str, Any]] = {
    "dedgeai": dict(
        n_bs=20,
        capacities=tuple(float(f) for f in DEDGEAI_CAPACITIES),
        rates=tuple(float(r) for r in DEDGEAI_RATES),
        arrivals="uniform_count",
        workload="steps",
        result_range=(0.6, 1.0),
        result_follows_work=True,
        deadline=None,
        slots=60,
    ),
}
"""Scenario fields a preset changes from `Scenario`'s defaults (explicit values still win)."""

PRESET_PROCESSES: dict[str, tuple[str, str]] = {"dedgeai": ("uniform_count", "steps")}
"""(arrival process, workload) a preset's accounting is defined for; the others: ("bernoulli", "density")."""


class Scenario(BaseModel):
    """One experiment point. Defaults are the reference's published point (spec §1.1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    n_bs: Count = Field(5, ge=1, description="number of base stations B (each hosts one edge server)")
    capacities: tuple[Number, ...] = Field(
        (10.0, 20.0, 30.0, 40.0, 50.0), description="ES capacities f (GHz)"
    )
    rates: tuple[Number, ...] = Field(
        (400.0, 425.0, 450.0, 475.0, 500.0), description="link rates r, by destination (Mbit/s)"
    )
    tasks_per_slot: Count = Field(50, ge=1, description="task slots per BS per time slot N")
    arrivals: ArrivalProcess = Field(
        "bernoulli",
        description="bernoulli: each task slot holds a task with probability p; "
        "uniform_count: 1..N tasks per (slot, BS), uniformly (DEdgeAI)",
    )
    arrival_prob: Number = Field(
        0.3, ge=0.0, le=1.0, description="Bernoulli arrival probability p per task slot"
    )
    size_range: tuple[Number, Number] = Field((2.0, 5.0), description="task size range (Mbit), uniform")
    density_range: tuple[Number, Number] = Field(
        (100.0, 300.0), description="computing density range (cycles/bit), uniform"
    )
    workload: Workload = Field(
        "density",
        description="density: work d·ρ (ρ from density_range); "
        "steps: work ρ_n·q_n, Gcycles per diffusion step times steps (DEdgeAI)",
    )
    step_work_range: tuple[Number, Number] = Field(
        (0.1024, 0.3072), description="steps workload: Gcycles per diffusion step ρ_n, uniform"
    )
    steps_range: tuple[Count, Count] = Field(
        (1, 14), description="steps workload: diffusion steps q_n, uniform integers, bounds included"
    )
    result_range: tuple[Number, Number] | None = Field(
        None, description="result size res_n (Mbit), uniform; downloaded at r_a; None: no download"
    )
    result_follows_work: bool = Field(
        False, description="res_n drawn from the same uniforms as ρ_n (DEdgeAI's seed reuse, spec §6.1)"
    )
    bits_per_mbit: Number = Field(
        1.024e6, gt=0, description="bits per Mbit when converting density (reference: 1.024e6)"
    )
    density_per_task_index: bool = Field(
        True, description="density drawn once per run, indexed by task slot n (reference)"
    )
    slot_length: Number = Field(1.0, gt=0, description="slot length Δ (s)")
    slots: Count = Field(
        61, ge=2, description="slots per episode; the last one only supplies the learners' next state"
    )
    deadline: Number | None = Field(1.0, gt=0, description="task deadline (s); None: no deadline, no failure")
    model: DelayModel = "slotted"
    allocation: AllocationRule = "cwa"
    preset: PresetName = "amcoedge"
    variant: EnvVariant = Field(default_factory=EnvVariant)
    deadline_policy: DeadlinePolicy = Field(
        "keep", description="event model: keep late work (paper) or drop it at the deadline"
    )
    link_topology: LinkTopology = Field(
        "pair", description="event model: one FIFO link per source→destination pair, or one per destination"
    )
    faults: Faults = Field(
        default_factory=Faults, description="faults of the servers and links (`mecsim.faults`)"
    )
    seed: Count = Field(0, ge=0)

    @model_serializer(mode="wrap")
    def _serialize(self, handler) -> dict[str, Any]:
        """Every field; ``faults`` only when a scenario has any, so a fault-free point keeps its hash."""
        data = handler(self)
        if isinstance(data, dict) and not self.faults.active and self.faults.observable:
            data.pop("faults", None)
        return _drop_later_defaults(self, data, _LATER_SCENARIO_FIELDS)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "amcoedge")
        if preset not in PRESETS:
            return data  # the Literal check reports it with the allowed names
        explicit = data.get("variant") or {}
        if isinstance(explicit, EnvVariant):
            explicit = explicit.model_dump(exclude_unset=True)
        return {**PRESET_SCENARIOS.get(preset, {}), **data, "variant": {**PRESETS[preset], **explicit}}

    @field_validator("capacities", "rates")
    @classmethod
    def _positive(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        bad = [v for v in values if not v > 0]
        if bad:
            raise ValueError(f"every entry must be > 0, got {bad}")
        return values

    @field_validator("size_range", "density_range", "step_work_range", "steps_range", "result_range")
    @classmethod
    def _range(cls, bounds: tuple[float, float] | None) -> tuple[float, float] | None:
        if bounds is None:
            return bounds
        lo, hi = bounds
        if not 0 < lo <= hi:
            raise ValueError(f"need 0 < low <= high, got ({lo}, {hi})")
        return bounds

    @model_validator(mode="after")
    def _lengths(self) -> Scenario:
        for name in ("capacities", "rates"):
            if len(getattr(self, name)) != self.n_bs:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} entries but n_bs = {self.n_bs}; "
                    f"give one value per base station"
                )
        expected = PRESET_PROCESSES.get(self.preset, ("bernoulli", "density"))
        if (self.arrivals, self.workload) != expected:
            raise ValueError(
                f"arrivals = {self.arrivals!r} and workload = {self.workload!r} disagree with preset = "
                f"{self.preset!r}, whose accounting is defined for arrivals = {expected[0]!r}, "
                f"workload = {expected[1]!r}; change the preset or leave both at the preset's values"
            )
        if self.deadline is None:
            if self.variant.wait_clip_to_deadline:
                raise ValueError(
                    "deadline = None but variant.wait_clip_to_deadline = True clips waits to the deadline; "
                    "give a deadline or set variant.wait_clip_to_deadline = false"
                )
            if self.deadline_policy == "drop":
                raise ValueError(
                    "deadline = None but deadline_policy = 'drop' drops work at the deadline; "
                    "give a deadline or use deadline_policy = 'keep'"
                )
        if self.result_follows_work and self.result_range is None:
            raise ValueError("result_follows_work = true needs a result_range (the results to draw)")
        try:
            self.faults.check(self.n_bs)
        except ValueError as err:
            raise ValueError(f"faults: {err}") from None
        if self.model == "slotted":
            for name, default in (("deadline_policy", "keep"), ("link_topology", "pair")):
                if getattr(self, name) != default:
                    raise ValueError(
                        f"{name} = {getattr(self, name)!r} applies to the event model only (model = 'slotted'); "
                        f"set model = 'event', or leave {name} at {default!r}"
                    )
        return self

    # -- derived quantities --------------------------------------------------------------
    @property
    def density_gcycles_per_mbit(self) -> tuple[float, float]:
        """Density range converted to Gcycles/Mbit (reference: ×1.024e6 bits / 1e9)."""
        lo, hi = self.density_range
        return lo * self.bits_per_mbit / 1e9, hi * self.bits_per_mbit / 1e9

    @property
    def deadline_s(self) -> float:
        """The deadline in seconds; +inf for a scenario without one (no task can fail)."""
        return float("inf") if self.deadline is None else float(self.deadline)

    @property
    def decision_slots(self) -> int:
        """Slots in which decisions are made (the reference processes slots 0..slots-2)."""
        return self.slots - 1

    def fault_profile(self, episode: int, stream_name: str = "arrivals") -> Profile | None:
        """The episode's fault realisation (`mecsim.faults`), or None for a scenario without faults."""
        if not self.faults.active:
            return None
        return Profile(self.faults, self.n_bs, self.seed, episode, stream_name)

    def config_hash(self) -> str:
        """Short stable hash of every field except the seed: identifies the experiment point."""
        payload = self.model_dump(mode="json", exclude={"seed"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def flat(self) -> dict[str, Any]:
        """Flat dotted dict of every field, as used for result columns and ``--set`` keys."""
        return _flatten(self.model_dump(mode="json"))

    def replace(self, overrides: dict[str, Any] | None = None, **fields: Any) -> Scenario:
        """A new validated scenario with overrides applied: dotted keys in a dict, or plain keywords.

        A new preset brings its own variant flags; flags that differed from the old preset's
        (the user's explicit choices) are kept.
        """
        overrides = {**(overrides or {}), **fields}
        base = self.model_dump(mode="json")
        if overrides.get("preset", self.preset) != self.preset:
            old = EnvVariant(**PRESETS[self.preset]).model_dump(mode="json")
            base["variant"] = {k: v for k, v in base["variant"].items() if old.get(k) != v}
            old_fields = Scenario(preset=self.preset).model_dump(mode="json")
            base = {k: v for k, v in base.items() if k == "variant" or old_fields.get(k) != v}
        return build_scenario(base, overrides)


_LATER_VARIANT_FIELDS = {"remote_wait_includes_tau": True, "local_download": True}
_LATER_SCENARIO_FIELDS = {
    "arrivals": "bernoulli",
    "workload": "density",
    "step_work_range": (0.1024, 0.3072),
    "steps_range": (1, 14),
    "result_range": None,
    "result_follows_work": False,
}


def _drop_later_defaults(model: BaseModel, data: Any, later: dict[str, Any]) -> Any:
    """Leave out fields added after results were first written while they hold their defaults, so
    that the config hash (and the cell ids built on it) of every earlier point stays the same."""
    if isinstance(data, dict):
        for name, default in later.items():
            if getattr(model, name) == default:
                data.pop(name, None)
    return data


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part!r} is not a section")
        node[leaf] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "scenario"
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            lines.append(
                f"{field}: unknown field (value {value!r}); known fields: {', '.join(_known_fields())}"
            )
        elif not e["loc"]:  # a rule across fields: its message names them
            lines.append(e["msg"].removeprefix("Value error, "))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{field} = {value!r}: {msg}")
    return "invalid scenario:\n  " + "\n  ".join(lines)


def _known_fields() -> list[str]:
    names = [n for n in Scenario.model_fields if n != "variant"]
    return names + [f"variant.{n}" for n in EnvVariant.model_fields]


def build_scenario(base: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> Scenario:
    """Validate ``base`` (nested dict, e.g. from TOML) with dotted ``overrides`` applied on top."""
    data = _merge(dict(base or {}), _nest(overrides or {}))
    try:
        return Scenario(**data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


EXPERIMENT_TABLES = ("run", "methods", "sweep", "extends")


def load_scenario(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Scenario:
    """Load a TOML scenario file (optional) and apply dotted overrides.

    The file holds scenario fields at its top level, or a ``[scenario]`` table and nothing else.
    """
    base: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                base = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the scenario file: {err.strerror}") from None
        if any(key in base for key in EXPERIMENT_TABLES):
            raise ConfigError(
                f"{path} is an experiment file (it has {', '.join(k for k in EXPERIMENT_TABLES if k in base)}); "
                f"run it with `mecsim sweep {path}`, or give a scenario file"
            )
        if "scenario" in base:
            others = sorted(set(base) - {"scenario"})
            if others:
                raise ConfigError(
                    f"{path}: keys outside [scenario] would be ignored: {', '.join(others)}; "
                    f"move them into [scenario] or remove them"
                )
            base = base["scenario"]
    return build_scenario(base, overrides)


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is read as TOML (numbers, lists, strings, booleans)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--set {text!r}: expected key=value, e.g. deadline=0.5 or capacities=[10,20,30,40,50]"
        )
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare word, e.g. model=event
    return key.strip(), value
