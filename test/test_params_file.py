# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Parameter files read as rcl reads them, with what rcl silently ignores reported."""

from __future__ import annotations

import pytest

from cosmos3_ros.core.params_file import check_overrides, read_params_file, ros_args_params, section_matches


@pytest.mark.parametrize(
    "section, node, expected",
    [
        ("/**", "/cosmos3_policy", True),
        ("/**", "/a/b/cosmos3_policy", True),
        ("cosmos3_policy", "/cosmos3_policy", True),
        ("cosmos3_policy", "/arm/cosmos3_policy", False),  # rcl: no leading slash means the root namespace
        ("/arm/cosmos3_policy", "/arm/cosmos3_policy", True),
        ("/*/cosmos3_policy", "/arm/cosmos3_policy", True),
        ("/*/cosmos3_policy", "/a/b/cosmos3_policy", False),
        ("/**/cosmos3_policy", "/a/b/cosmos3_policy", True),
        ("/other", "/cosmos3_policy", False),
    ],
)
def test_section_matching_follows_rcl(section, node, expected):
    assert section_matches(section, node) is expected


def _file(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def test_exact_section_overrides_wildcard_and_nested_keys_flatten(tmp_path):
    p = _file(
        tmp_path,
        "cosmos3_policy:\n  ros__parameters:\n    num_steps: 7\n"
        "/**:\n  ros__parameters:\n    num_steps: 3\n    seed: 4\n    joint_limits:\n      lower: [0.0]\n",
    )
    r = read_params_file(p)
    assert r.ok and r.values == {"num_steps": 7, "seed": 4, "joint_limits.lower": [0.0]}


@pytest.mark.parametrize(
    "text, field, words",
    [
        ("a: 1\n", "fatal", "has no `ros__parameters`"),
        ("- 1\n", "fatal", "expected a mapping"),
        ("/**: {ros__parameters: [1]}\n", "fatal", "must be a mapping"),
        ("/**:\n  ros__parameters:\n    fsp: 5.0\n", "unknown", "did you mean 'fps'"),
        ("/**:\n  ros__parameters:\n    fps: fast\n", "problems", "fps must be a number"),
        ("/**:\n  ros__parameters:\n    num_steps: 900\n", "problems", "num_steps=900 is outside [1, 200]"),
        ("{{{", "fatal", "not valid YAML"),
    ],
)
def test_every_mistake_is_reported(tmp_path, text, field, words):
    r = read_params_file(_file(tmp_path, text))
    assert not r.ok
    assert any(words in w for w in getattr(r, field)), (field, r)


def test_builtin_parameters_are_accepted(tmp_path):
    text = "/**:\n  ros__parameters:\n    use_sim_time: true\n    qos_overrides./cam.subscription.depth: 3\n"
    p = _file(tmp_path, text)
    assert read_params_file(p).ok


def test_missing_file_and_other_node_only(tmp_path):
    assert read_params_file(tmp_path / "nope.yaml").fatal == ["no such file"]
    r = read_params_file(_file(tmp_path, "/robot2/cosmos3_policy:\n  ros__parameters:\n    seed: 1\n"))
    assert r.ok and not r.values and "no section applies to node /cosmos3_policy" in r.warnings()[0]


def test_ros_args_are_parsed_like_rcl():
    files, overrides = ros_args_params(
        ["node", "--foo", "--ros-args", "-r", "__node:=x", "--params-file", "a.yaml", "-p", "num_steps:=4",
         "-p", "camera_topics:=['/a', '/b']", "--", "--params-file", "ignored.yaml"]
    )  # fmt: skip
    assert files == ["a.yaml"] and overrides == {"num_steps": 4, "camera_topics": ["/a", "/b"]}
    warnings = check_overrides({"num_stpes": 4, "seed": -1, "use_sim_time": True})
    assert len(warnings) == 2 and "did you mean 'num_steps'" in warnings[0] and "seed=-1" in warnings[1]


def test_bare_y_and_n_are_booleans_as_rcl_reads_them(tmp_path):
    """rcl's parser reads a bare y/n as a bool (PyYAML does not): a joint named y must be quoted, and we say so."""
    p = tmp_path / "p.yaml"
    p.write_text('/**:\n  ros__parameters:\n    joint_names: [x, y, z]\n    prompt: "y"\n')
    report = read_params_file(p)
    assert report.problems == [
        "joint_names must be a list of strings, got ['x', True, 'z'] "
        "(rcl reads a bare y, n, yes, no, on, off, true or false as a boolean: quote it)"
    ]
    assert report.values["prompt"] == "y"  # quoted: a string
