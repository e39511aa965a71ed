# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""The sidecar wire protocol without a server: openpi's encoding, the decoder's checks, request parsing."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from cosmos3_ros.core.settings import PolicySettings
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


def test_decoded_arrays_never_alias_to_pickle():
    # dtype strings are whitelisted before np.dtype() sees them; nothing reaches object arrays.
    assert proto._DTYPE_RE.match("|O") is None and proto._DTYPE_RE.match("O8") is None


def _req(**extra):
    msg = {"observation/image": IMG}
    msg.update(extra)
    return msg


def test_minimal_openpi_request_parses_with_server_defaults():
    r = proto.parse_message(proto.unpackb(_openpi_packb({"observation/image": IMG, "prompt": "stack"})), DEFAULTS)
    assert isinstance(r, proto.Request)
    assert r.mode == "policy" and r.settings == DEFAULTS.replace(prompt="stack")
    assert np.array_equal(r.image, IMG) and r.image.flags.writeable and r.cameras == ("observation/image",)


def test_settings_overrides_are_applied_and_typed():
    r = proto.parse_message(
        _req(
            settings={
                "seed": np.int64(7),
                "num_steps": 3.0,
                "guidance": 2,
                "shift": None,
                "domain_name": "droid",
                "action_chunk_size": 8,
                "fps": 15,
                "image_size": 256,
                "view_point": "wrist_view",
            }
        ),
        DEFAULTS.replace(shift=5.0),
    )
    s = r.settings
    assert (s.seed, s.num_steps, s.guidance, s.shift, s.domain_name) == (7, 3, 2.0, None, "droid_lerobot")
    assert (s.action_chunk_size, s.fps, s.image_size, s.view_point) == (8, 15.0, 256, "wrist_view")


def test_camera_keys_first_by_priority_or_tiled_for_concat_view():
    wrist = np.full((20, 30, 3), 9, np.uint8)
    ext = np.full((32, 40, 3), 5, np.uint8)
    msg = {"observation/wrist_image_left": wrist, "observation/exterior_image_1_left": ext}
    r = proto.parse_message(msg, DEFAULTS)
    assert r.cameras == ("observation/exterior_image_1_left",) and np.array_equal(r.image, ext)
    r = proto.parse_message({**msg, "settings": {"view_point": "concat_view"}}, DEFAULTS)
    assert r.cameras == ("observation/exterior_image_1_left", "observation/wrist_image_left")
    assert r.image.shape == (32, 70, 3)
    assert np.array_equal(r.image[:, :40], ext) and np.array_equal(r.image[:20, 40:], wrist)
    assert (r.image[20:, 40:] == 0).all()
    # an unlisted camera key is still recognised
    r = proto.parse_message({"observation/top_image": ext}, DEFAULTS)
    assert r.cameras == ("observation/top_image",)


def test_forward_dynamics_request_and_state_passthrough():
    actions = np.zeros((4, 10), np.float32)
    r = proto.parse_message(
        _req(
            mode="forward_dynamics",
            actions=actions.tolist(),
            **{
                "observation/joint_position": np.zeros(7),
                "observation/gripper_position": 0.5,
                "observation/timestamp": 12.5,
                "return_video": np.bool_(True),
                "observation/extra": 1,
            },
        ),
        DEFAULTS,
    )
    assert r.mode == "forward_dynamics" and r.actions.dtype == np.float32 and r.actions.shape == (4, 10)
    assert r.joint_position.shape == (7,) and r.gripper_position.tolist() == [0.5]
    assert r.timestamp == 12.5 and r.return_video is True and r.ignored_keys == ("observation/extra",)


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
    "image tiny": (_req(**{"observation/image": np.zeros((4, 4, 3), np.uint8)}), "must lie in"),
    "image huge side": (_req(**{"observation/image": np.zeros((16, 5000, 3), np.uint8)}), "must lie in"),
    "image list": (_req(**{"observation/image": [[1, 2, 3]]}), "numpy array"),
    "image string": (_req(**{"observation/image": "frame.png"}), "numpy array"),
    "unknown setting": (_req(settings={"steps": 3}), "unknown setting"),
    "settings not map": (_req(settings=[1]), "must be a map"),
    "setting wrong type": (_req(settings={"num_steps": "ten"}), "integer"),
    "setting bool as int": (_req(settings={"seed": True}), "integer"),
    "setting nan": (_req(settings={"guidance": math.nan}), "finite"),
    "setting out of range": (_req(settings={"image_size": 333}), "resolution tier"),
    "setting zero steps": (_req(settings={"num_steps": 0}), "num_steps"),
    "steps over cap": (_req(settings={"num_steps": 10**9}), "server limit"),
    "chunk over cap": (_req(settings={"action_chunk_size": 10**6}), "server limit"),
    "unknown domain": (_req(settings={"domain_name": "mars_rover"}), "unknown domain"),
    "nested garbage setting": (_req(settings={"seed": [[[{}]]]}), "integer"),
    "unknown mode": (_req(mode="inverse_dynamics"), "'mode'"),
    "fd without actions": (_req(mode="forward_dynamics"), "needs 'actions'"),
    "fd non-finite actions": (_req(mode="forward_dynamics", actions=np.full((4, 10), np.nan)), "non-finite"),
    "fd wrong width": (_req(mode="forward_dynamics", actions=np.zeros((4, 7))), "width 7"),
    "fd 1-D actions": (_req(mode="forward_dynamics", actions=np.zeros(10)), "[T, D]"),
    "fd ragged list": (_req(mode="forward_dynamics", actions=[[1.0] * 10, [1.0]]), "rectangular"),
    "fd string actions": (_req(mode="forward_dynamics", actions="zeros"), "numeric"),
    "fd too many rows": (_req(mode="forward_dynamics", actions=np.zeros((1000, 10))), "limit"),
    "actions in policy": (_req(actions=W10), "only read with mode"),
    "prompt int": (_req(prompt=5), "'prompt' must be a string"),
    "prompt too long": (_req(prompt="x" * 10_000), "limit"),
    "return_video int": (_req(return_video=1), "true or false"),
    "timestamp string": (_req(**{"observation/timestamp": "now"}), "finite number"),
    "timestamp inf": (_req(**{"observation/timestamp": math.inf}), "finite number"),
    "joints nan": (_req(**{"observation/joint_position": np.array([0.0, math.nan])}), "non-finite"),
    "joints string": (_req(**{"observation/joint_position": "home"}), "numeric"),
    "joints 2-D": (_req(**{"observation/joint_position": np.zeros((3, 3))}), "1-D"),
    "ctrl not string": ({"__ctrl__": 3}, "__ctrl__"),
    "ext type image": (_req(**{"observation/image": msgpack.ExtType(5, b"x")}), "numpy array"),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_requests_are_rejected_with_a_useful_message(name):
    message, needle = BAD_REQUESTS[name]
    with pytest.raises(proto.ProtocolError, match=None) as info:
        proto.parse_message(message, DEFAULTS)
    assert needle in str(info.value), str(info.value)


def test_error_reply_shape():
    r = proto.error_reply(proto.ERROR_BUSY, "full", {"infer_ms": 0.0}, 3.0)
    assert r["error"] == {"type": "busy", "message": "full"}
    assert r["server_timing"] == {"infer_ms": 0.0} and r["observation/timestamp"] == 3.0
    assert proto.timestamp_of({"observation/timestamp": np.float64(2.0)}) == 2.0
    assert proto.timestamp_of([1]) is None
