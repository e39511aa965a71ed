# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The sidecar wire protocol without a server: openpi's encoding, the decoder's checks, request parsing."""

from __future__ import annotations

import json
import math

import msgpack
import numpy as np
import pytest

from cosmos3_ros.core.compose import compose, plan
from cosmos3_ros.core.schema import BY_NAME, REQUEST_SETTINGS
from cosmos3_ros.core.settings import PolicySettings
from cosmos3_ros.sidecar import codec
from cosmos3_ros.sidecar import protocol as proto

DEFAULTS = PolicySettings(num_steps=2)
IMG = np.arange(32 * 48 * 3, dtype=np.uint8).reshape(32, 48, 3)


def _openpi_array(arr: np.ndarray) -> dict:
    """How openpi_client.msgpack_numpy.pack_array lays out an array."""
    return {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": arr.shape}


def _openpi_packb(obj) -> bytes:
    def default(o):
        if isinstance(o, np.ndarray):
            return _openpi_array(o)
        if isinstance(o, np.generic):
            return {b"__npgeneric__": True, b"data": o.item(), b"dtype": o.dtype.str}
        return o

    return msgpack.packb(obj, default=default)


@pytest.mark.parametrize(
    "value",
    [
        np.zeros((3, 4), np.float32),
        np.arange(6, dtype=">i4").reshape(2, 3),
        np.array([True, False]),
        np.array(1.5),
        np.zeros((0, 7), np.float64),
        np.array(["ab", "c"]),
        np.float32(2.5),
        np.uint8(7),
        np.str_("pick"),
        IMG,
    ],
)
def test_round_trip_and_openpi_byte_compatibility(value):
    ours = proto.packb({"x": value})
    assert ours == _openpi_packb({"x": value})  # byte-for-byte what openpi-client sends
    back = proto.unpackb(ours)["x"]
    if isinstance(value, str):  # np.str_ is a str: msgpack sends it as a plain string (so does openpi)
        assert back == value
        return
    assert back.dtype == value.dtype and np.array_equal(back, value)


def test_non_contiguous_arrays_are_sent_in_c_order():
    arr = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    assert np.array_equal(proto.unpackb(proto.packb(arr)), arr)


@pytest.mark.parametrize("value", [np.array([object()]), np.zeros(2, np.complex64), object(), {1, 2}])
def test_encoder_refuses_objects_it_cannot_send_safely(value):
    with pytest.raises(TypeError):
        proto.packb(value)


def _array_header(**fields) -> bytes:
    d = {b"__ndarray__": True, b"data": b"\x00" * 12, b"dtype": "<f4", b"shape": [3]}
    d.update({k.encode(): v for k, v in fields.items()})
    return msgpack.packb({"observation/image": d})


BAD_MESSAGES = {
    "not msgpack": b"\xc1\xc1garbage",
    "empty": b"",
    "truncated": proto.packb({"observation/image": IMG})[:100],
    "trailing bytes": proto.packb({"a": 1}) + b"\x00",
    "giant array header": msgpack.packb(
        {"a": {b"__ndarray__": True, b"data": b"x" * 12, b"dtype": "|u1", b"shape": [2**30, 2**30, 3]}}
    ),
    "shape too large per dim": _array_header(shape=[2**40]),
    "shape/byte mismatch": _array_header(shape=[4]),
    "negative dim": _array_header(shape=[-3]),
    "shape not a list": _array_header(shape="3"),
    "bool dim": _array_header(shape=[True, True, True]),
    "too many dims": _array_header(shape=[1] * 9 + [3], data=b"\x00" * 12),
    "object dtype": _array_header(dtype="|O"),
    "void dtype": _array_header(dtype="|V4"),
    "structured dtype": _array_header(dtype="[('a', '<f4')]"),
    "complex dtype": _array_header(dtype="<c8"),
    "zero-width unicode": _array_header(dtype="<U0", data=b"", shape=[10**9]),
    "dtype injection": _array_header(dtype="<f4; import os"),
    "dtype not a string": _array_header(dtype=4),
    "data not bytes": _array_header(data="\x00" * 12),
    "scalar overflow": msgpack.packb({"a": {b"__npgeneric__": True, b"data": 300, b"dtype": "|u1"}}),
    "scalar bad data": msgpack.packb({"a": {b"__npgeneric__": True, b"data": [1], b"dtype": "<f4"}}),
    "int map key": msgpack.packb({1: 2}),
    "bad utf-8": b"\x81\xa1a\xa1\xff",
    "deep nesting": b"\x91" * 5000 + b"\xc0",
    "huge map header": b"\xdf\xff\xff\xff\xff",
    "huge array header": b"\xdd\xff\xff\xff\xff",
    "huge bin header": b"\xc6\xff\xff\xff\xff",
}


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_decoder_rejects_malformed_messages_with_protocol_error(name):
    with pytest.raises(proto.ProtocolError):
        proto.unpackb(BAD_MESSAGES[name])


def test_decoder_rejects_non_bytes():
    with pytest.raises(proto.ProtocolError, match="binary"):
        proto.unpackb("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", ["|O", "O", "O8", "<O", "object", "|V4", "V8", "u1,O", "[('a', '<f4')]", "<M8[s]"])
def test_unsafe_dtypes_never_reach_numpy(dtype):
    # dtype strings are whitelisted before np.dtype() sees them: nothing can build an object (pickle) array.
    with pytest.raises(proto.ProtocolError, match="is not accepted"):
        proto.unpackb(_array_header(dtype=dtype))


def test_protocol_reexports_the_codec():
    assert proto.packb is codec.packb and proto.unpackb is codec.unpackb and proto.ProtocolError is codec.ProtocolError


def _req(**extra):
    msg = {"observation/image": IMG}
    msg.update(extra)
    return msg


def _droid(**extra):
    """A request in NVIDIA's DROID keys (an ``observation/image``, the state, a prompt), with ``extra`` over it."""
    msg = {"prompt": "pick", "observation/joint_position": np.zeros(7), "observation/gripper_position": 0.0}
    msg.update(extra)
    return _req(**msg)


def test_minimal_openpi_request_parses_with_server_defaults():
    r = proto.parse_message(proto.unpackb(_openpi_packb({"observation/image": IMG, "prompt": "stack"})), DEFAULTS)
    assert isinstance(r, proto.Request)
    assert r.mode == "policy" and r.settings == DEFAULTS.replace(prompt="stack")
    assert np.array_equal(r.image, IMG) and r.image.flags.writeable and r.cameras == ("observation/image",)
    assert r.state is None and r.joint_position is None and r.actions is None and r.return_video is False


# -- per-request settings: the schema's request settings and bounds ---------------------------------------------

#: The per-request settings and bounds the README documents (pinned here; the schema must keep them).
DOCUMENTED_SETTINGS_KEYS = (
    "domain_name",
    "action_chunk_size",
    "fps",
    "image_size",
    "num_steps",
    "guidance",
    "shift",
    "seed",
    "view_point",
    "negative_prompt",
    "use_system_prompt",
    "raw_action_dim",
    "use_state",
    "conditioning",
    "guidance_steps",
)
DOCUMENTED_BOUNDS = {
    "action_chunk_size": (1, 128),
    "fps": (0.5, 120.0),
    "num_steps": (1, 200),
    "guidance": (1.0, 20.0),
    "shift": (0.1, 50.0),  # and 0: the checkpoint's scheduler
    "seed": (0, 2**31 - 1),
}


def test_settings_keys_are_the_schema_request_settings_minus_prompt():
    request_names = [s.name for s in REQUEST_SETTINGS]
    assert "prompt" in request_names  # the prompt travels as the top-level openpi key instead
    assert list(proto.SETTINGS_KEYS) == [n for n in request_names if n != "prompt"]
    assert proto.SETTINGS_KEYS == DOCUMENTED_SETTINGS_KEYS
    assert all(BY_NAME[k].scope == "sampling" and BY_NAME[k].request for k in proto.SETTINGS_KEYS)
    assert set(proto.SETTINGS_KEYS) | {"prompt"} <= set(PolicySettings.field_names())


def test_documented_bounds_are_the_schema_bounds():
    for name, (lo, hi) in DOCUMENTED_BOUNDS.items():
        assert (BY_NAME[name].minimum, BY_NAME[name].maximum) == (lo, hi), name
    assert BY_NAME["prompt"].max_length == BY_NAME["negative_prompt"].max_length == 4096


def _text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _beyond(name: str) -> list:
    lo, hi = DOCUMENTED_BOUNDS[name]
    if BY_NAME[name].kind == "int":
        return [lo - 1, hi + 1]
    return [lo - 0.05, hi * 1.01]


@pytest.mark.parametrize("name", sorted(DOCUMENTED_BOUNDS))
def test_request_settings_are_accepted_at_their_bounds_and_rejected_beyond(name):
    lo, hi = DOCUMENTED_BOUNDS[name]
    extra = {"shift": 5.0} if name == "num_steps" else {}  # above 51 steps only with a flow shift (the Karras rule)
    for value in (lo, hi):
        r = proto.parse_message(_req(settings={name: value, **extra}), DEFAULTS)
        assert getattr(r.settings, name) == value and type(getattr(r.settings, name)) is type(value), (name, value)
    for value in _beyond(name):
        with pytest.raises(proto.ProtocolError) as info:
            proto.parse_message(_req(settings={name: value}), DEFAULTS)
        text = str(info.value)
        # the setting's name, the value and the schema's range, as the node's parameter validation words it
        assert text == f"settings.{BY_NAME[name].check(value)}", text
        assert f"settings.{name}=" in text and f"[{_text(lo)}, {_text(hi)}]" in text, text


@pytest.mark.parametrize("key", ["prompt", "negative_prompt"])
def test_prompts_are_limited_to_4096_characters(key):
    ok = "p" * 4096
    r = proto.parse_message(_req(prompt=ok) if key == "prompt" else _req(settings={key: ok}), DEFAULTS)
    assert getattr(r.settings, key) == ok
    long = "p" * 4097
    with pytest.raises(proto.ProtocolError, match=f"{key} has 4097 characters; the limit is 4096"):
        proto.parse_message(_req(prompt=long) if key == "prompt" else _req(settings={key: long}), DEFAULTS)


def test_settings_overrides_are_applied_and_typed():
    r = proto.parse_message(
        _req(
            settings={
                "seed": np.int64(7),
                "num_steps": np.int32(3),
                "guidance": 2,
                "shift": 0,
                "domain_name": "droid",
                "action_chunk_size": 8,
                "fps": 15,
                "image_size": np.array(256),
                "view_point": "wrist_view",
                "negative_prompt": np.str_("blurry"),
                "use_system_prompt": np.bool_(True),
            }
        ),
        DEFAULTS.replace(shift=5.0),
    )
    s = r.settings
    assert (s.seed, s.num_steps, s.guidance, s.shift, s.domain_name) == (7, 3, 2.0, 0.0, "droid_lerobot")
    assert (s.action_chunk_size, s.fps, s.image_size, s.view_point) == (8, 15.0, 256, "wrist_view")
    assert (s.negative_prompt, s.use_system_prompt) == ("blurry", True)
    types = [type(v) for v in (s.seed, s.num_steps, s.guidance, s.shift, s.fps, s.image_size, s.use_system_prompt)]
    assert types == [int, int, float, float, float, int, bool]


def test_shift_zero_keeps_the_checkpoint_scheduler_and_nil_is_no_longer_a_shift():
    assert proto.parse_message(_req(settings={"shift": 0.0}), DEFAULTS.replace(shift=3.0)).settings.shift == 0.0
    assert proto.parse_message(_req(settings={"shift": 0.1}), DEFAULTS).settings.shift == 0.1
    with pytest.raises(proto.ProtocolError, match=r"settings\.shift must be a number, got None"):
        proto.parse_message(_req(settings={"shift": None}), DEFAULTS)
    with pytest.raises(proto.ProtocolError, match=r"shift=0\.05 is outside \[0\.1, 50\] \(or 0: keep the checkpoint"):
        proto.parse_message(_req(settings={"shift": 0.05}), DEFAULTS)


def test_integer_settings_take_integral_floats_but_not_fractions():
    # JSON-fed clients send 3.0 for 3: the schema coerces losslessly, and refuses 3.5.
    r = proto.parse_message(_req(settings={"num_steps": 3.0, "seed": 7.0, "image_size": 256.0}), DEFAULTS)
    assert (r.settings.num_steps, r.settings.seed, r.settings.image_size) == (3, 7, 256)
    assert isinstance(r.settings.num_steps, int)
    for name in ("num_steps", "seed", "action_chunk_size", "image_size"):
        with pytest.raises(proto.ProtocolError, match=f"settings.{name} must be an integer, got 3.5"):
            proto.parse_message(_req(settings={name: 3.5}), DEFAULTS)


# -- cameras, modes, state --------------------------------------------------------------------------------------


def test_camera_keys_first_by_priority_or_side_by_side_for_concat_view():
    wrist = np.full((20, 30, 3), 9, np.uint8)
    ext = np.arange(32 * 40 * 3, dtype=np.uint8).reshape(32, 40, 3)
    msg = {"observation/wrist_image_left": wrist, "observation/exterior_image_1_left": ext}
    r = proto.parse_message(msg, DEFAULTS)
    assert r.cameras == ("observation/exterior_image_1_left",) and np.array_equal(r.image, ext)
    r = proto.parse_message({**msg, "settings": {"view_point": "concat_view"}}, DEFAULTS)
    order = ["observation/exterior_image_1_left", "observation/wrist_image_left"]
    assert list(r.cameras) == order
    # the node's side_by_side composition: every camera scaled to the first one's height (32), no padding
    assert r.image.shape == (32, 40 + 48, 3)
    assert np.array_equal(r.image[:, :40], ext) and (r.image[:, 40:] == 9).all()
    np.testing.assert_array_equal(r.image, compose(msg, order, "side_by_side"))
    # an unlisted camera key is still recognised (after the listed ones)
    r = proto.parse_message({"observation/top_image": ext}, DEFAULTS)
    assert r.cameras == ("observation/top_image",)
    r = proto.parse_message(
        {**msg, "observation/top_image": wrist, "settings": {"view_point": "concat_view"}}, DEFAULTS
    )
    assert list(r.cameras) == [*order, "observation/top_image"] and r.image.shape == (32, 40 + 48 + 48, 3)


def test_composed_cameras_wider_than_the_limit_are_rejected():
    wide = np.zeros((16, 3000, 3), np.uint8)
    msg = {
        "observation/exterior_image_1_left": wide,
        "observation/wrist_image_left": wide,
        "settings": {"view_point": "concat_view"},
    }
    with pytest.raises(proto.ProtocolError, match="composed cameras would be 16x6000; the limit is 4096 a side"):
        proto.parse_message(msg, DEFAULTS)


def test_concat_view_width_is_checked_before_composing(monkeypatch):
    tall, wide = np.zeros((4096, 16, 3), np.uint8), np.zeros((16, 4096, 3), np.uint8)
    order = ["observation/exterior_image_1_left", "observation/wrist_image_left"]
    huge = plan({k: v.shape[:2] for k, v in zip(order, (tall, wide), strict=True)}, order, "side_by_side")
    assert huge.width > 10**6  # 4096 x 1M pixels: about 12.9 GB if it were composed

    def guarded(images, names, layout):
        p = plan({k: images[k].shape[:2] for k in names}, names, layout)
        assert p.width <= proto.MAX_IMAGE_SIDE, f"composed a {p.height}x{p.width} image before checking its width"
        return compose(images, names, layout)

    monkeypatch.setattr(proto, "compose", guarded)
    msg = {order[0]: tall, order[1]: wide, "settings": {"view_point": "concat_view"}}
    with pytest.raises(proto.ProtocolError, match="the limit is 4096 a side"):
        proto.parse_message(msg, DEFAULTS)


def test_forward_dynamics_request_and_openpi_state_passthrough():
    actions = np.zeros((4, 10), np.float32)
    r = proto.parse_message(
        _req(
            mode="forward_dynamics",
            actions=actions.tolist(),
            prompt="stack",
            **{
                "observation/joint_position": np.zeros(7),
                "observation/gripper_position": 0.5,
                "observation/timestamp": 12.5,
                "return_video": np.bool_(True),
                "observation/extra": 1,
            },
        ),
        DEFAULTS.replace(use_state=True),
    )
    assert r.mode == "forward_dynamics" and r.actions.dtype == np.float32 and r.actions.shape == (4, 10)
    assert r.joint_position.shape == (1, 7) and r.gripper_position.tolist() == [[0.5]]
    assert r.timestamp == 12.5 and r.return_video is True and r.ignored_keys == ("observation/extra",)
    assert r.state is None and r.droid  # forward_dynamics reads no state (and a policy row would need width 8)


def test_observation_state_is_one_action_row_in_model_units():
    state = np.linspace(-0.5, 0.5, 10, dtype=np.float32)
    r = proto.parse_message(_req(**{"observation/state": state}), DEFAULTS)
    assert r.state.shape == (10,) and np.array_equal(r.state, state.astype(np.float64))
    assert "observation/state" not in r.ignored_keys
    r = proto.parse_message(_req(**{"observation/state": state[None]}), DEFAULTS)  # [1, N] is tolerated
    assert r.state.shape == (10,)
    r = proto.parse_message(_req(**{"observation/state": [0.0, 1.0]}, settings={"domain_name": "pusht"}), DEFAULTS)
    assert r.state.tolist() == [0.0, 1.0]  # the width follows the request's domain
    with pytest.raises(
        proto.ProtocolError, match=r"'observation/state' has 7 values; domain 'bridge_orig_lerobot' needs 10"
    ):
        proto.parse_message(_req(**{"observation/state": np.zeros(7)}), DEFAULTS)
    with pytest.raises(proto.ProtocolError, match="'observation/state' contains non-finite"):
        proto.parse_message(_req(**{"observation/state": np.full(10, np.inf)}), DEFAULTS)
    with pytest.raises(proto.ProtocolError, match="'observation/state' must be 1-D"):
        proto.parse_message(_req(**{"observation/state": np.zeros((2, 10))}), DEFAULTS)


def test_droid_keys_carry_the_state_with_the_gripper_flipped_and_actions_flip_back():
    state = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.8], np.float32)
    keys = proto.droid_state_keys(state)
    assert sorted(keys) == ["observation/gripper_position", "observation/joint_position"]
    np.testing.assert_array_equal(keys["observation/joint_position"], state[:-1].astype(np.float64))
    np.testing.assert_allclose(keys["observation/gripper_position"], [0.2], atol=1e-7)
    reply = np.array([[0.5, -0.5, 0.25], [0.1, 0.2, 1.0]], np.float64)
    model = proto.droid_actions_to_model(reply)
    assert model.dtype == np.float32 and reply[0, 2] == 0.25  # the input is not modified
    np.testing.assert_array_equal(model, np.array([[0.5, -0.5, 0.75], [0.1, 0.2, 0.0]], np.float32))
    np.testing.assert_allclose(proto.droid_actions_to_model(model), reply, atol=1e-7)  # its own inverse


def test_control_messages_are_recognised():
    assert proto.parse_message({"__ctrl__": "episode_start"}, DEFAULTS) == proto.Control("episode_start")


W10 = np.zeros((4, 10), np.float32)
BAD_REQUESTS = {
    "list": ([1, 2, 3], "msgpack map"),
    "none": (None, "msgpack map"),
    "bytes key": ({b"observation/image": IMG}, "keys must be strings"),
    "no image": ({"prompt": "x"}, "no image"),
    "image float": (_req(**{"observation/image": IMG.astype(np.float32)}), "uint8"),
    "image 2-D": (_req(**{"observation/image": IMG[:, :, 0]}), "HxWx3"),
    "image RGBA": (_req(**{"observation/image": np.zeros((32, 32, 4), np.uint8)}), "HxWx3"),
    "image CHW": (_req(**{"observation/image": np.zeros((3, 32, 32), np.uint8)}), "HxWx3"),
    "image tiny": (_req(**{"observation/image": np.zeros((4, 4, 3), np.uint8)}), "must lie in [16, 4096]"),
    "image huge side": (_req(**{"observation/image": np.zeros((16, 5000, 3), np.uint8)}), "must lie in [16, 4096]"),
    "image list": (_req(**{"observation/image": [[1, 2, 3]]}), "numpy array"),
    "image string": (_req(**{"observation/image": "frame.png"}), "numpy array"),
    "unknown setting": (_req(settings={"steps": 3}), "unknown setting 'steps'; per-request settings are"),
    "prompt as a setting": (_req(settings={"prompt": "x"}), "unknown setting 'prompt'"),
    "settings not map": (_req(settings=[1]), "'settings' must be a map"),
    "setting wrong type": (_req(settings={"num_steps": "ten"}), "settings.num_steps must be an integer"),
    "setting bool as int": (_req(settings={"seed": True}), "settings.seed must be an integer"),
    "setting nan": (_req(settings={"guidance": math.nan}), "settings.guidance must be finite"),
    "setting not a tier": (_req(settings={"image_size": 333}), "settings.image_size=333 is not one of [256, 480"),
    "setting zero steps": (_req(settings={"num_steps": 0}), "settings.num_steps=0 is outside [1, 200]"),
    "steps over cap": (_req(settings={"num_steps": 10**9}), "settings.num_steps=1000000000 is outside [1, 200]"),
    "chunk over cap": (_req(settings={"action_chunk_size": 10**6}), "action_chunk_size=1000000 is outside [1, 128]"),
    "unknown domain": (_req(settings={"domain_name": "mars_rover"}), "domain_name='mars_rover' is not one of"),
    "unknown view point": (_req(settings={"view_point": "top"}), "view_point='top' is not one of"),
    "nested garbage setting": (_req(settings={"seed": [[[{}]]]}), "settings.seed must be an integer"),
    "unknown mode": (_req(mode="inverse_dynamics"), "'mode'"),
    "fd without actions": (_req(mode="forward_dynamics"), "needs 'actions'"),
    "fd non-finite actions": (_req(mode="forward_dynamics", actions=np.full((4, 10), np.nan)), "non-finite"),
    "fd wrong width": (_req(mode="forward_dynamics", actions=np.zeros((4, 7))), "width 7"),
    "fd 1-D actions": (_req(mode="forward_dynamics", actions=np.zeros(10)), "[T, D]"),
    "fd ragged list": (_req(mode="forward_dynamics", actions=[[1.0] * 10, [1.0]]), "rectangular"),
    "fd string actions": (_req(mode="forward_dynamics", actions="zeros"), "numeric"),
    "fd too many rows": (_req(mode="forward_dynamics", actions=np.zeros((1000, 10))), "the limit is 128"),
    "actions in policy": (_req(actions=W10), "only read with mode"),
    "prompt int": (_req(prompt=5), "'prompt': prompt must be a string, got 5"),
    "prompt too long": (_req(prompt="x" * 10_000), "prompt has 10000 characters; the limit is 4096"),
    "return_video int": (_req(return_video=1), "true or false"),
    "timestamp string": (_req(**{"observation/timestamp": "now"}), "finite number"),
    "timestamp inf": (_req(**{"observation/timestamp": math.inf}), "finite number"),
    "joints nan": (_droid(**{"observation/joint_position": np.array([0.0] * 6 + [math.nan])}), "non-finite"),
    "joints string": (
        _droid(**{"observation/joint_position": "home"}),
        "'observation/joint_position' must be a numeric array",
    ),
    "joints 3-D": (_droid(**{"observation/joint_position": np.zeros((2, 3, 7))}), "at most [128, D]"),
    "joints width 6": (_droid(**{"observation/joint_position": np.zeros(6)}), "shape [7] or [T, 7] (radians)"),
    "joints too many rows": (_droid(**{"observation/joint_position": np.zeros((129, 7))}), "at most [128, D]"),
    "joints ragged": (_droid(**{"observation/joint_position": [[0.0] * 7, [0.0]]}), "rectangular list"),
    "joints bool": (_droid(**{"observation/joint_position": np.zeros(7, bool)}), "got a boolean"),
    "gripper [T, 2]": (_droid(**{"observation/gripper_position": np.zeros((3, 2))}), "[T] or [T, 1], got (3, 2)"),
    "gripper dict": (_droid(**{"observation/gripper_position": {"g": 1}}), "'observation/gripper_position' must"),
    "gripper inf": (_droid(**{"observation/gripper_position": math.inf}), "non-finite"),
    "gripper missing": (
        _req(prompt="x", **{"observation/joint_position": np.zeros(7)}),
        "'observation/gripper_position' is missing",
    ),
    "joints missing": (
        _req(prompt="x", **{"observation/gripper_position": 0.0}),
        "'observation/joint_position' is missing",
    ),
    "droid without prompt": (
        _req(**{"observation/joint_position": np.zeros(7), "observation/gripper_position": 0.0}),
        "'prompt' must be a string",
    ),
    "droid and state": (_droid(**{"observation/state": np.zeros(10)}), "send the robot state once"),
    "droid and prefix": (_droid(**{"observation/prefix": np.zeros((2, 10))}), "goes with 'observation/state'"),
    "droid row too narrow for the domain": (
        _droid(settings={"use_state": True}),
        "the DROID keys give a state row of 8 values (7 joints, 1 - gripper); domain 'bridge_orig_lerobot' needs 10",
    ),
    "use_state without a state": (_req(settings={"use_state": True}), "use_state is set but no robot state"),
    "prefix wrong width": (_req(**{"observation/prefix": np.zeros((2, 7))}), "shape [d, 10] with 1 <= d < 16"),
    "prefix whole chunk": (_req(**{"observation/prefix": np.zeros((16, 10))}), "1 <= d < 16 (action_chunk_size)"),
    "prefix 1-D": (_req(**{"observation/prefix": np.zeros(10)}), "got (10,)"),
    "prefix nan": (_req(**{"observation/prefix": np.full((2, 10), math.nan)}), "prefix' contains non-finite"),
    "prefix string": (_req(**{"observation/prefix": "tail"}), "numeric [d, 10] array"),
    "prefix in forward_dynamics": (
        _req(mode="forward_dynamics", actions=W10, **{"observation/prefix": np.zeros((2, 10))}),
        "only read with mode 'policy'",
    ),
    "state wrong width": (_req(**{"observation/state": np.zeros(3)}), "'observation/state' has 3 values"),
    "state string": (_req(**{"observation/state": "home"}), "'observation/state' must be a 1-D numeric"),
    "ctrl not string": ({"__ctrl__": 3}, "__ctrl__"),
    "ext type image": (_req(**{"observation/image": msgpack.ExtType(5, b"x")}), "numpy array"),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_requests_are_rejected_with_a_useful_message(name):
    message, needle = BAD_REQUESTS[name]
    with pytest.raises(proto.ProtocolError) as info:
        proto.parse_message(message, DEFAULTS)
    assert needle in str(info.value), str(info.value)


def test_error_reply_shape():
    r = proto.error_reply(proto.ERROR_BUSY, "full", {"infer_ms": 0.0}, 3.0)
    assert r["error"] == {"type": "busy", "message": "full"}
    assert r["server_timing"] == {"infer_ms": 0.0} and r["observation/timestamp"] == 3.0
    assert proto.timestamp_of({"observation/timestamp": np.float64(2.0)}) == 2.0
    assert proto.timestamp_of([1]) is None


# -- observation/prefix, error frames ---------------------------------------------------------------------------


def test_prefix_is_known_rows_in_model_units():
    prefix = np.linspace(-0.5, 0.5, 30).reshape(3, 10)
    r = proto.parse_message(_req(**{"observation/prefix": prefix}), DEFAULTS)
    assert r.prefix.dtype == np.float32 and r.prefix.shape == (3, 10) and not r.droid
    np.testing.assert_array_equal(r.prefix, prefix.astype(np.float32))
    assert proto.parse_message(_req(**{"observation/prefix": prefix.tolist()}), DEFAULTS).prefix.shape == (3, 10)
    assert proto.parse_message(_req(), DEFAULTS).prefix is None


def test_error_frames_are_json_text_and_parse_back():
    reply = proto.error_reply(proto.ERROR_BAD_REQUEST, "no image", {"unpack_ms": np.float64(0.5)}, 2.0)
    text = proto.error_frame(reply)
    assert isinstance(text, str)
    assert json.loads(text) == {
        "error": "bad_request",
        "message": "no image",
        "server_timing": {"unpack_ms": 0.5},
        "observation/timestamp": 2.0,
    }
    assert proto.parse_error_frame(text) == {
        "error": {"type": "bad_request", "message": "no image"},
        "server_timing": {"unpack_ms": 0.5},
        "observation/timestamp": 2.0,
    }
    traceback_text = "Traceback (most recent call last):\n  File \"x.py\"\nKeyError: 'observation/image'"
    for other in (traceback_text, "[1]", '{"error": "oops", "message": "x"}', '{"error": "busy"}', "null"):
        assert proto.parse_error_frame(other) is None, other
