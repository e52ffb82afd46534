"""The prototype's configuration: a scenario, the service that makes its tasks real, the emulated network.

One TOML file (``experiments/prototype.toml``) holds three tables:

* ``[scenario]`` — an ordinary mecsim `Scenario` (event model). Its units are read as the
  prototype's: capacity f_i in cores (1 Gcycle = one core-second of work), sizes in Mbit of
  the bytes that really cross the links, rates in Mbit/s (of ``bits_per_mbit`` bits);
* ``[service]`` — how a task becomes an image-repair request: images = size / image_mbit,
  denoising steps = work per image / ``seconds_per_evaluation`` (rounded to ``step_choices``);
* ``[network]`` — mode, addresses and the shaper's burst.

Every invalid value raises `PrototypeError` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import ConfigError, Scenario, build_scenario
from .errors import PrototypeError

IMAGE_BYTES = 2 * 16 * 16
"""One request image on the wire: the 16 x 16 8-bit picture and its 8-bit mask."""
RESULT_BYTES = 16 * 16
"""One repaired image on the way back."""
SAFE_NETWORK = ipaddress.ip_network("198.18.0.0/15")
"""Addresses reserved for benchmarking (RFC 2544): the only ones the namespaces use."""
TBF_MIN_KBIT, TBF_MAX_KBIT = 8, 10_000_000


class Service(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    seconds_per_evaluation: float = Field(
        0.00065,
        gt=0,
        description="nominal core-seconds of one image's network evaluation (docs/aigc-profile.toml)",
    )
    step_choices: tuple[int, ...] = Field(
        (10, 20, 30, 40), description="denoising steps a request may have (each compiled at start-up)"
    )
    max_images: int = Field(6, ge=1, le=64, description="most images in one request")
    mask: Literal["centre", "half", "strokes"] = "centre"

    @field_validator("step_choices")
    @classmethod
    def _steps(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if not steps or any(s < 1 or s > 1000 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"need increasing step counts within 1..1000, got {list(steps)}")
        return steps


class Network(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mode: Literal["auto", "netns", "loopback"] = Field(
        "auto", description="netns: namespaces, veth, tc tbf, cgroup quotas (root); loopback: 127.0.0.1"
    )
    subnet: str = Field("198.18.0.0/24", description="data plane (shaped links); within 198.18.0.0/15")
    control_subnet: str = Field("198.18.1.0/24", description="control plane (scheduler), not shaped")
    data_mtu: int = Field(
        576, ge=576, le=9000, description="data-plane frame size (bytes); tbf's bucket is two frames"
    )
    scheduler_port: int = Field(8786, ge=1024, le=65535)
    start_timeout_s: float = Field(
        90.0, gt=0, description="how long a worker may take to load the service and join"
    )

    @field_validator("subnet", "control_subnet")
    @classmethod
    def _subnet(cls, text: str) -> str:
        try:
            net = ipaddress.ip_network(text)
        except ValueError as err:
            raise ValueError(f"not an IPv4 network: {err}") from None
        if not net.subnet_of(SAFE_NETWORK) or net.num_addresses < 16:
            raise ValueError(f"{text} must lie within {SAFE_NETWORK} and hold at least 16 addresses")
        return text


class PrototypeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    scenario: Scenario
    service: Service = Field(default_factory=Service)
    network: Network = Field(default_factory=Network)

    @property
    def n_es(self) -> int:
        return self.scenario.n_bs

    @property
    def image_mbit(self) -> float:
        return IMAGE_BYTES * 8 / self.scenario.bits_per_mbit

    @property
    def result_mbit(self) -> float:
        return RESULT_BYTES * 8 / self.scenario.bits_per_mbit

    def rate_kbit(self, i: int) -> float:
        """ES ``i``'s link rate as tc reads it (kbit/s, 1000 bits)."""
        return self.scenario.rates[i] * self.scenario.bits_per_mbit / 1000

    def quota_us(self, i: int, period_us: int) -> int:
        """ES ``i``'s cgroup CPU quota per period: its capacity in cores (the kernel's least is 1 ms)."""
        return max(1000, round(self.scenario.capacities[i] * period_us))

    def address(self, node: int, plane: str = "data", with_prefix: bool = False) -> str:
        """Node 0 is the control namespace (scheduler, dispatcher); node i + 1 is ES i."""
        net = ipaddress.ip_network(self.network.subnet if plane == "data" else self.network.control_subnet)
        return f"{net[node + 1]}/{net.prefixlen}" if with_prefix else str(net[node + 1])

    def check(self, cores: int) -> None:
        """What the scenario asks of this machine: quotas within its cores, rates tc can honour."""
        sc = self.scenario
        if sc.model != "event":
            raise PrototypeError(
                f"scenario.model = {sc.model!r}: the prototype is compared with the event model"
            )
        if sc.result_range is not None:
            raise PrototypeError(
                "scenario.result_range: the prototype's results are the repaired images; leave it unset"
            )
        over = [f"capacities[{i}] = {f:g}" for i, f in enumerate(sc.capacities) if f > 1.0]
        if over:
            raise PrototypeError(
                f"scenario.{', '.join(over)} cores: a worker computes on one thread, so an ES's capacity "
                f"(its CPU quota) can be at most 1 core"
            )
        total = sum(sc.capacities)
        if total > cores + 1e-9:
            raise PrototypeError(
                f"scenario.capacities sum to {total:g} cores but this machine has {cores}; each ES's CPU "
                f"quota is its capacity in cores, so the sum must be <= {cores}"
            )
        for i in range(sc.n_bs):
            kbit = self.rate_kbit(i)
            if not TBF_MIN_KBIT <= kbit <= TBF_MAX_KBIT:
                raise PrototypeError(
                    f"scenario.rates[{i}] = {sc.rates[i]:g} Mbit/s is {kbit:g} kbit/s, which tc tbf cannot "
                    f"shape; allowed {TBF_MIN_KBIT}..{TBF_MAX_KBIT} kbit/s"
                )
        lo, hi = self.steps_range()
        low_steps, high_steps = self.service.step_choices[0], self.service.step_choices[-1]
        if lo < low_steps / 2 or hi > high_steps * 1.5:
            raise PrototypeError(
                f"scenario.density_range maps to {lo:.1f}..{hi:.1f} denoising steps per image, far outside "
                f"service.step_choices {list(self.service.step_choices)}; change one of them"
            )

    def steps_range(self) -> tuple[float, float]:
        """Denoising steps per image at the scenario's density bounds (before rounding)."""
        lo, hi = self.scenario.density_gcycles_per_mbit
        per_step = self.service.seconds_per_evaluation / self.image_mbit  # Gcycles per Mbit per step
        return lo / per_step, hi / per_step


def load(path: str | Path, overrides: dict | None = None) -> PrototypeConfig:
    """Read a prototype TOML file; ``overrides`` are dotted ``scenario.*`` / ``service.*`` / ``network.*`` keys."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as err:
        raise PrototypeError(f"{path}: cannot read the prototype file: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise PrototypeError(f"{path}: not valid TOML: {err}") from None
    unknown = sorted(set(raw) - {"scenario", "service", "network"})
    if unknown:
        raise PrototypeError(f"{path}: unknown table(s) {unknown}; allowed: scenario, service, network")
    scenario_overrides, tables = (
        {},
        {"service": dict(raw.get("service", {})), "network": dict(raw.get("network", {}))},
    )
    for key, value in (overrides or {}).items():
        table, _, field = key.partition(".")
        if table == "scenario":
            scenario_overrides[field] = value
        elif table in tables and field:
            tables[table][field] = value
        else:
            raise PrototypeError(f"--set {key}: give scenario.<field>, service.<field> or network.<field>")
    try:
        scenario = build_scenario(raw.get("scenario", {}), scenario_overrides)
    except ConfigError as err:
        raise PrototypeError(f"{path}: [scenario]: {err}") from None
    try:
        return PrototypeConfig(scenario=scenario, **tables)
    except ValidationError as err:
        lines = [
            f"{'.'.join(str(p) for p in e['loc'])} = {e.get('input')!r}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        ]
        raise PrototypeError(f"{path}: invalid prototype configuration:\n  " + "\n  ".join(lines)) from None
