# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The settings schema and PolicySettings: one table, every bad value a clear error naming it."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest

from cosmos3_ros.commands.flags import add_sampling_flags, add_setting_flags, flag_values, settings_from_args
from cosmos3_ros.core import schema
from cosmos3_ros.core.results import ActionChunk, NonFiniteOutputError, Timing
from cosmos3_ros.core.schema import BY_NAME, SETTINGS, Setting, SettingsError, resolve_values
from cosmos3_ros.core.settings import PolicySettings, validate_actions, validate_image


def test_defaults_match_recommended_action_settings():
    s = PolicySettings()
    assert (s.num_steps, s.guidance, s.image_size, s.action_chunk_size) == (30, 1.0, 480, 16)
    assert s.domain_name == "bridge_orig_lerobot" and s.action_width == 10 and s.num_frames == 17


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"domain_name": "nope"}, "domain_name='nope' is not one of"),
        ({"action_chunk_size": 0}, r"action_chunk_size=0 is outside \[1, 128\]"),
        ({"action_chunk_size": 2.5}, "action_chunk_size must be an integer"),
        ({"image_size": 512}, r"image_size=512 is not one of \[256, 480, 704, 720\]"),
        ({"fps": 0}, r"fps=0.0 is outside \[0.5, 120\]"),
        ({"fps": float("nan")}, "fps must be finite"),
        ({"num_steps": 0}, r"num_steps=0 is outside \[1, 200\]"),
        ({"num_steps": 300}, r"num_steps=300 is outside \[1, 200\]"),
        ({"guidance": 0.5}, r"guidance=0.5 is outside \[1, 20\]"),
        ({"shift": -1.0}, r"shift=-1.0 is outside \[0.1, 50\] \(or 0: keep the checkpoint's scheduler\)"),
        ({"shift": 1e-300}, r"shift=1e-300 is outside"),
        ({"seed": -1}, r"seed=-1 is outside \[0, 2147483647\]"),
        ({"seed": 2**31}, "seed=2147483648 is outside"),
        ({"view_point": "top"}, "view_point='top' is not one of"),
        ({"prompt": 3}, "prompt must be a string"),
        ({"prompt": "x" * 4097}, "prompt has 4097 characters; the limit is 4096"),
        ({"use_system_prompt": 1}, "use_system_prompt must be true or false"),
    ],
)
def test_bad_settings(changes, match):
    with pytest.raises(SettingsError, match=match):
        PolicySettings(**changes)


def test_aliases_and_dict_round_trip():
    s = PolicySettings(domain_name="droid", shift=5.0)
    assert s.domain_name == "droid_lerobot"
    assert PolicySettings.from_dict(s.to_dict()) == s
    with pytest.raises(SettingsError, match="unknown setting"):
        PolicySettings.from_dict({"num_step": 3})
    assert PolicySettings(shift=0).shift == 0.0 and isinstance(PolicySettings(fps=15).fps, float)
    with pytest.raises(SettingsError):
        s.replace(num_steps=-2)


def test_validate_image_and_actions():
    assert validate_image(np.zeros((2, 3, 3), np.uint8)).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="uint8"):
        validate_image(np.zeros((2, 3, 3), np.int16))
    s = PolicySettings()
    assert validate_actions(np.zeros((16, 10)), s).dtype == np.float32
    with pytest.raises(ValueError, match="at least one row"):
        validate_actions(np.zeros((0, 10)), s)
    with pytest.raises(ValueError, match="non-finite"):
        validate_actions(np.array([[np.inf] * 10]), s)


def test_action_chunk_refuses_non_finite():
    with pytest.raises(NonFiniteOutputError):
        ActionChunk(actions=np.full((2, 10), np.nan, np.float32), settings=PolicySettings(), timing=Timing())
    with pytest.raises(ValueError, match="float32"):
        ActionChunk(actions=np.zeros((2, 10), np.float64), settings=PolicySettings(), timing=Timing())


# -- the schema itself -------------------------------------------------------------------------------------------


def test_policy_settings_fields_are_exactly_the_sampling_scope():
    sampling = [s for s in SETTINGS if s.scope == "sampling"]
    fields = dataclasses.fields(PolicySettings)
    assert [f.name for f in fields] == [s.name for s in sampling]
    for f, s in zip(fields, sampling, strict=True):
        assert f.default == s.default, f.name


def test_every_setting_is_well_formed():
    for s in SETTINGS:
        assert s.description.endswith((".", ")")), s.name
        assert s.check(s.validate(s.default)) == "", s.name
        if s.kind in ("int", "float") and not s.choices:
            assert s.minimum is not None and s.maximum is not None, f"{s.name}: numbers need bounds"
            assert s.check(s.minimum if s.kind == "float" else int(s.minimum)) == ""
            assert s.check(s.maximum if s.kind == "float" else int(s.maximum)) == ""
        assert not (s.runtime and s.scope in ("model", "backend", "server")), s.name
    assert {s.name for s in schema.REQUEST_SETTINGS} == {f.name for f in dataclasses.fields(PolicySettings)} - {
        "domain_name"
    } | {"domain_name"}


def test_zero_is_allowed_only_where_it_has_a_meaning():
    assert BY_NAME["shift"].check(0.0) == "" and BY_NAME["shift"].check(0.05) != ""
    assert BY_NAME["replan_every"].check(0) == ""
    assert BY_NAME["num_steps"].check(0) != ""


@pytest.mark.parametrize(
    "kind, good, bad",
    [
        ("bool", [True], [1, "true", None]),
        ("int", [3, -1, 3.0], [3.5, True, "3", float("inf")]),
        ("float", [3, 2.5], [True, "x", float("nan")]),
        ("str", ["a"], [1, None]),
        ("str_list", [[], ["a"], ("a", "b")], ["a", [1], {"a": 1}]),
        ("float_list", [[], [1, 2.5]], [["a"], [True], "1,2"]),
    ],
)
def test_types_are_strict(kind, good, bad):
    spec = Setting("x", kind, {"bool": False, "int": 0, "float": 0.0, "str": ""}.get(kind, []), "X.", "node")
    for v in good:
        spec.validate(v)
    for v in bad:
        with pytest.raises(SettingsError):
            spec.validate(v)


def test_coerce_numpy_and_ints():
    spec = BY_NAME["guidance"]
    assert spec.validate(np.float32(2.0)) == 2.0 and isinstance(spec.validate(3), float)
    assert BY_NAME["num_steps"].validate(np.int64(4)) == 4
    assert BY_NAME["action_scale"].validate(np.array([1, 2])) == [1.0, 2.0]


def test_resolve_values_names_unknown_keys_with_a_suggestion():
    with pytest.raises(SettingsError, match="did you mean 'num_steps'"):
        resolve_values({"num_stpes": 3})
    assert resolve_values({"num_steps": 3})["num_steps"] == 3


# -- flags from the schema ---------------------------------------------------------------------------------------


def _parser():
    p = argparse.ArgumentParser(exit_on_error=False)
    add_sampling_flags(p)
    add_setting_flags(p, ["port", "guardrail"])
    return p


def test_flags_have_the_parameter_names_and_dash_aliases():
    args = _parser().parse_args(["--num_steps", "4", "--domain-name", "droid", "--guardrail", "--shift", "5"])
    s = settings_from_args(args)
    assert (s.num_steps, s.domain_name, s.shift) == (4, "droid_lerobot", 5.0)
    assert flag_values(args, ["guardrail", "port"]) == {"guardrail": True, "port": 8000}


def test_flags_layer_over_a_parameter_file():
    args = _parser().parse_args(["--seed", "3"])
    s = settings_from_args(args, base={"seed": 9, "num_steps": 4})
    assert (s.seed, s.num_steps, s.guidance) == (3, 4, 1.0)


def test_flag_values_are_checked_by_the_schema(capsys):
    p = argparse.ArgumentParser(prog="x")
    add_sampling_flags(p)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--num_steps", "300"])
    assert e.value.code == 2
    assert "num_steps=300 is outside [1, 200]" in capsys.readouterr().err


def test_help_shows_defaults_and_bounds():
    text = " ".join(_parser().format_help().split())
    assert "[default: 30]" in text and "[1, 200]" in text and "[default: 8000]" in text


def test_markdown_and_yaml_cover_every_node_setting():
    md = schema.markdown_table(schema.NODE_SCOPES)
    template = schema.yaml_template()
    for s in schema.NODE_SETTINGS:
        assert f"`{s.name}`" in md
        assert f"{s.name.rpartition('.')[2]}:" in template


def test_steps_the_checkpoint_scheduler_cannot_run_are_refused_at_set_time():
    """The released scheduler config (UniPC, Karras sigmas: shift 0) asserts inside diffusers above 51 steps."""
    from cosmos3_ros.control.config import values_from_overrides

    with pytest.raises(SettingsError, match="num_steps 60 with shift 0"):
        PolicySettings(num_steps=60)
    assert PolicySettings(num_steps=60, shift=5.0).num_steps == 60
    with pytest.raises(SettingsError, match="num_steps 80 with shift 0"):
        values_from_overrides({"forecast_num_steps": 80})
