"""Scenario validation, presets, TOML loading, ``--set`` parsing and the config hash."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mecsim.config import (
    PRESETS,
    ConfigError,
    EnvVariant,
    Scenario,
    build_scenario,
    load_scenario,
    parse_assignment,
)


# -- defaults: the published experiment point ---------------------------------------------------
def test_defaults_are_the_published_point():
    s = Scenario()
    assert s.n_bs == 5
    assert s.capacities == (10.0, 20.0, 30.0, 40.0, 50.0)
    assert s.rates == (400.0, 425.0, 450.0, 475.0, 500.0)
    assert s.tasks_per_slot == 50
    assert s.arrival_prob == 0.3
    assert s.size_range == (2.0, 5.0)
    assert s.density_range == (100.0, 300.0)
    assert s.slots == 61
    assert s.decision_slots == 60
    assert s.deadline == 1.0
    assert s.slot_length == 1.0
    assert s.model == "slotted"
    assert s.allocation == "cwa"
    assert s.preset == "amcoedge"
    assert s.seed == 0


def test_density_conversion_uses_the_mixed_1024_convention():
    lo, hi = Scenario().density_gcycles_per_mbit
    assert lo == pytest.approx(0.1024, rel=1e-12)
    assert hi == pytest.approx(0.3072, rel=1e-12)
    # a plain 1e6 bits/Mbit gives 0.1..0.3
    lo, hi = Scenario(bits_per_mbit=1e6).density_gcycles_per_mbit
    assert (lo, hi) == pytest.approx((0.1, 0.3))


def test_default_variant_is_the_amcoedge_environment():
    v = Scenario().variant
    assert v == EnvVariant()
    assert v.wait_clip_to_deadline is False
    assert v.local_wait_includes_tau is False
    assert v.local_upload_in_split is False
    assert v.tau_counts_local is False
    assert v.tau_clamp == "multi"
    assert v.fail_penalty == 10.0
    assert v.makespan_counts_idle is True
    assert v.enqueue_failed_work is True


# -- presets (reference spec §4 table) ----------------------------------------------------------
# (wait clipped, local wait has tau, local upload in split, tau counts local, tau clamp, penalty)
SPEC_TABLE = {
    "amcoedge": (False, False, False, False, "multi", 10.0),
    "randcoedge": (True, False, False, True, "none", 2.0),
    "drlcoedge": (True, True, True, True, "none", 2.0),
    "smcoedge": (True, False, False, True, "none", 2.0),
    "optimal": (False, False, False, False, "none", 10.0),
    "dedgeai": (False, False, False, False, "none", 10.0),
}


@pytest.mark.parametrize("preset", sorted(SPEC_TABLE))
def test_preset_flags_match_the_spec_table(preset):
    v = Scenario(preset=preset).variant
    got = (
        v.wait_clip_to_deadline,
        v.local_wait_includes_tau,
        v.local_upload_in_split,
        v.tau_counts_local,
        v.tau_clamp,
        v.fail_penalty,
    )
    assert got == SPEC_TABLE[preset]
    # every reference environment charges idle members and keeps failed work
    assert v.makespan_counts_idle is True
    assert v.enqueue_failed_work is True


def test_every_preset_is_in_the_table():
    assert set(PRESETS) == set(SPEC_TABLE)


def test_explicit_flags_override_a_preset():
    s = Scenario(preset="drlcoedge", variant={"fail_penalty": 5.0, "tau_clamp": "always"})
    assert s.variant.fail_penalty == 5.0
    assert s.variant.tau_clamp == "always"
    # the rest still comes from the preset
    assert s.variant.local_wait_includes_tau is True
    assert s.variant.wait_clip_to_deadline is True


def test_explicit_envvariant_object_overrides_only_what_it_sets():
    s = Scenario(preset="randcoedge", variant=EnvVariant(makespan_counts_idle=False))
    assert s.variant.makespan_counts_idle is False
    assert s.variant.tau_counts_local is True  # from the preset
    assert s.variant.fail_penalty == 2.0


def test_dotted_override_beats_preset():
    s = build_scenario({}, {"preset": "smcoedge", "variant.wait_clip_to_deadline": False})
    assert s.variant.wait_clip_to_deadline is False
    assert s.variant.tau_counts_local is True


def test_replace_keeps_explicit_flags_and_new_preset_resets_them():
    s = Scenario(preset="drlcoedge", variant={"fail_penalty": 5.0})
    kept = s.replace(deadline=0.3)
    assert kept.deadline == 0.3
    assert kept.variant == s.variant
    switched = s.replace(preset="amcoedge")
    assert switched.variant == EnvVariant(fail_penalty=5.0)  # amcoedge's flags, the explicit penalty kept


# -- invalid configurations -----------------------------------------------------------------------
INVALID = [
    ("capacities", {"capacities": (0.0, 20.0, 30.0, 40.0, 50.0)}, "0"),
    ("capacities", {"capacities": (10.0, -20.0, 30.0, 40.0, 50.0)}, "-20"),
    ("rates", {"rates": (400.0, 425.0, -450.0, 475.0, 500.0)}, "-450"),
    ("arrival_prob", {"arrival_prob": 1.5}, "1.5"),
    ("arrival_prob", {"arrival_prob": -0.25}, "-0.25"),
    ("deadline", {"deadline": 0.0}, "0"),
    ("deadline", {"deadline": -1.0}, "-1"),
    ("slot_length", {"slot_length": 0.0}, "0"),
    ("slot_length", {"slot_length": -2.0}, "-2"),
    ("capacities", {"capacities": (10.0, 20.0)}, "2 entries"),
    ("rates", {"rates": (400.0, 425.0, 450.0)}, "3 entries"),
    ("capacities", {"n_bs": 3}, "n_bs = 3"),
    ("size_range", {"size_range": (5.0, 2.0)}, "(5"),
    ("density_range", {"density_range": (300.0, 100.0)}, "300"),
    ("slots", {"slots": 1}, "1"),
    ("tasks_per_slot", {"tasks_per_slot": 0}, "0"),
    ("variant.fail_penalty", {"variant": {"fail_penalty": -1.0}}, "-1"),
]


@pytest.mark.parametrize(
    "field,kwargs,value", INVALID, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(INVALID)]
)
def test_invalid_values_raise_config_error_naming_field_and_value(field, kwargs, value):
    with pytest.raises(ConfigError) as info:
        build_scenario(kwargs)
    msg = str(info.value)
    assert field in msg
    assert value in msg


CHOICES = [
    ("model", {"model": "fluid"}, "fluid", ["slotted", "event"]),
    ("allocation", {"allocation": "greedy"}, "greedy", ["cwa", "hecwa", "waterfill"]),
    (
        "preset",
        {"preset": "mycoedge"},
        "mycoedge",
        ["amcoedge", "randcoedge", "drlcoedge", "smcoedge", "optimal"],
    ),
    ("variant.tau_clamp", {"variant": {"tau_clamp": "sometimes"}}, "sometimes", ["none", "multi", "always"]),
    ("deadline_policy", {"deadline_policy": "abort"}, "abort", ["keep", "drop"]),
]


@pytest.mark.parametrize("field,kwargs,value,allowed", CHOICES, ids=[c[0] for c in CHOICES])
def test_unknown_names_list_the_allowed_values(field, kwargs, value, allowed):
    with pytest.raises(ConfigError) as info:
        build_scenario(kwargs)
    msg = str(info.value)
    assert field in msg
    assert value in msg
    for name in allowed:
        assert name in msg


@pytest.mark.parametrize(
    "kwargs,name", [({"bogus_field": 1}, "bogus_field"), ({"variant": {"nope": True}}, "variant.nope")]
)
def test_unknown_field_is_rejected_with_known_fields(kwargs, name):
    with pytest.raises(ConfigError) as info:
        build_scenario(kwargs)
    msg = str(info.value)
    assert name in msg
    assert "unknown field" in msg
    assert "arrival_prob" in msg and "variant.tau_clamp" in msg


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_consistent_non_default_bs_count_is_accepted():
    s = Scenario(n_bs=2, capacities=(10.0, 20.0), rates=(400.0, 500.0))
    assert s.n_bs == 2


def test_boundary_probabilities_are_valid():
    assert Scenario(arrival_prob=0.0).arrival_prob == 0.0
    assert Scenario(arrival_prob=1.0).arrival_prob == 1.0
    assert Scenario(size_range=(3.0, 3.0)).size_range == (3.0, 3.0)


def test_scenario_is_immutable():
    s = Scenario()
    with pytest.raises(ValidationError):
        s.deadline = 2.0  # type: ignore[misc]


# -- TOML files and --set parsing ----------------------------------------------------------------
def test_load_toml_with_scenario_table(tmp_path):
    path = tmp_path / "point.toml"
    path.write_text(
        "[scenario]\n"
        "n_bs = 3\n"
        "capacities = [10, 20, 30]\n"
        "rates = [400, 450, 500]\n"
        "deadline = 0.5\n"
        'preset = "drlcoedge"\n'
        "[scenario.variant]\n"
        "fail_penalty = 3.0\n"
    )
    s = load_scenario(path)
    assert s.n_bs == 3
    assert s.capacities == (10.0, 20.0, 30.0)
    assert s.rates == (400.0, 450.0, 500.0)
    assert s.deadline == 0.5
    assert s.variant.fail_penalty == 3.0
    assert s.variant.local_wait_includes_tau is True


def test_load_toml_without_table_and_overrides_on_top(tmp_path):
    path = tmp_path / "flat.toml"
    path.write_text("arrival_prob = 0.6\nslots = 5\n")
    s = load_scenario(path, {"slots": 7, "variant.tau_clamp": "always"})
    assert s.arrival_prob == 0.6
    assert s.slots == 7
    assert s.variant.tau_clamp == "always"


def test_invalid_toml_raises_config_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("deadline = = 1\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_scenario(path)


def test_invalid_value_in_toml_names_field(tmp_path):
    path = tmp_path / "bad_value.toml"
    path.write_text("[scenario]\narrival_prob = 2.0\n")
    with pytest.raises(ConfigError, match="arrival_prob"):
        load_scenario(path)


def test_toml_explicit_flags_survive_preset_override(tmp_path):
    path = tmp_path / "explicit.toml"
    path.write_text("[scenario.variant]\nfail_penalty = 5.0\n")
    s = load_scenario(path, {"preset": "drlcoedge"})
    assert s.variant.local_wait_includes_tau is True  # from the preset
    assert s.variant.fail_penalty == 5.0  # explicitly given in the file


def test_replace_with_new_preset_keeps_explicit_flags_only():
    s = Scenario(preset="amcoedge", variant={"fail_penalty": 5.0})
    moved = s.replace(preset="drlcoedge")
    assert moved.variant.fail_penalty == 5.0  # the user's own choice survives
    assert moved.variant.local_wait_includes_tau is True  # the new preset's flag
    assert moved.variant.tau_clamp == "none"  # amcoedge's "multi" came from the old preset
    assert s.replace(deadline=0.5).variant == s.variant


@pytest.mark.parametrize(
    "text,key,value",
    [
        ("deadline=0.5", "deadline", 0.5),
        ("slots=4", "slots", 4),
        (" tasks_per_slot = 5 ", "tasks_per_slot", 5),
        ("capacities=[10,20,30,40,50]", "capacities", [10, 20, 30, 40, 50]),
        ("size_range=[1.5, 2.5]", "size_range", [1.5, 2.5]),
        ("model=event", "model", "event"),
        ('preset="drlcoedge"', "preset", "drlcoedge"),
        ("variant.makespan_counts_idle=false", "variant.makespan_counts_idle", False),
        ("variant.tau_clamp=always", "variant.tau_clamp", "always"),
    ],
)
def test_parse_assignment(text, key, value):
    k, v = parse_assignment(text)
    assert k == key
    assert v == value
    assert type(v) is type(value)


@pytest.mark.parametrize("text", ["deadline", "=0.5", "   =1"])
def test_parse_assignment_rejects_malformed(text):
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignment(text)


def test_parsed_assignments_build_a_scenario():
    overrides = dict(
        parse_assignment(a)
        for a in [
            "n_bs=2",
            "capacities=[5,15]",
            "rates=[100,200]",
            "preset=randcoedge",
            "allocation=waterfill",
        ]
    )
    s = load_scenario(None, overrides)
    assert s.capacities == (5.0, 15.0)
    assert s.allocation == "waterfill"
    assert s.variant.tau_counts_local is True


def test_set_with_bad_value_names_field():
    key, value = parse_assignment("deadline=-0.5")
    with pytest.raises(ConfigError, match=r"deadline = -0\.5"):
        load_scenario(None, {key: value})


# -- config hash ----------------------------------------------------------------------------------
def test_config_hash_is_stable_and_seed_independent(tmp_path):
    a = Scenario(deadline=0.5, preset="drlcoedge")
    b = build_scenario({}, {"preset": "drlcoedge", "deadline": 0.5})
    path = tmp_path / "same.toml"
    path.write_text('deadline = 0.5\npreset = "drlcoedge"\nseed = 99\n')
    c = load_scenario(path)
    assert a.config_hash() == b.config_hash() == c.config_hash()
    assert a.config_hash() == a.replace(seed=123).config_hash()
    h = a.config_hash()
    assert len(h) == 12 and int(h, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"n_bs": 4, "capacities": (10, 20, 30, 40), "rates": (400, 425, 450, 475)},
        {"capacities": (10, 20, 30, 40, 60)},
        {"rates": (400, 425, 450, 475, 501)},
        {"tasks_per_slot": 49},
        {"arrival_prob": 0.31},
        {"size_range": (2.0, 5.5)},
        {"density_range": (100.0, 301.0)},
        {"bits_per_mbit": 1e6},
        {"density_per_task_index": False},
        {"slot_length": 0.5},
        {"slots": 60},
        {"deadline": 0.9},
        {"model": "event"},
        {"allocation": "hecwa"},
        {"preset": "optimal"},
        {"model": "event", "deadline_policy": "drop"},
        {"model": "event", "link_topology": "destination"},
        {"variant": {"wait_clip_to_deadline": True}},
        {"variant": {"local_wait_includes_tau": True}},
        {"variant": {"local_upload_in_split": True}},
        {"variant": {"tau_counts_local": True}},
        {"variant": {"tau_clamp": "none"}},
        {"variant": {"fail_penalty": 2.0}},
        {"variant": {"makespan_counts_idle": False}},
        {"variant": {"enqueue_failed_work": False}},
        {"variant": {"remote_wait_includes_tau": False}},
        {"result_range": (0.6, 1.0), "variant": {"local_download": False}},
        {"result_range": (0.6, 1.0)},
        {"result_range": (0.6, 1.0), "result_follows_work": True},
        {"preset": "dedgeai"},
        {"preset": "dedgeai", "step_work_range": (0.1, 0.3)},
        {"preset": "dedgeai", "steps_range": (1, 10)},
        {"deadline": None},
        {"faults": {"windows": [{"target": "server", "index": 0, "start": 0.0, "end": 1.0, "factor": 0.5}]}},
        {
            "faults": {
                "windows": [{"target": "server", "index": 0, "start": 0.0, "end": 1.0, "factor": 0.5}],
                "observable": False,
            }
        },
    ],
)
def test_config_hash_changes_with_any_other_field(change):
    # event-model settings are compared with the event model's default point
    base = {"model": "event"} if change.get("model") == "event" and len(change) > 1 else {}
    assert Scenario(**change).config_hash() != Scenario(**base).config_hash()


def test_config_hash_covers_every_field():
    # the parametrised list above must touch every field but the seed
    covered = {
        "n_bs",
        "capacities",
        "rates",
        "tasks_per_slot",
        "arrival_prob",
        "size_range",
        "density_range",
        "bits_per_mbit",
        "density_per_task_index",
        "slot_length",
        "slots",
        "deadline",
        "model",
        "allocation",
        "preset",
        "deadline_policy",
        "link_topology",
        "variant",
        "faults",
        "arrivals",
        "workload",
        "step_work_range",
        "steps_range",
        "result_range",
        "result_follows_work",
    }
    assert covered == set(Scenario.model_fields) - {"seed"}
