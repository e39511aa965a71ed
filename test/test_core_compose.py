# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""cosmos3_ros.core.compose: documented output shapes and where each camera's pixels land."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos3_ros.core.compose import DROID_SIZE, LAYOUTS, Tile, compose, plan, resize, resize_bilinear_truncating


def solid(h: int, w: int, colour: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


RED, GREEN, BLUE, WHITE = (200, 0, 0), (0, 200, 0), (0, 0, 200), (255, 255, 255)


def test_layouts_are_listed():
    assert LAYOUTS == ("single", "side_by_side", "grid", "wrist_top", "droid")


# ---------------------------------------------------------------- droid (NVIDIA's released DROID composition)


def _torch_reference(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """What cosmos-framework's DROID server does: float interpolate (bilinear, half-pixel), astype(uint8)."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    y = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return y[0].permute(1, 2, 0).numpy().astype(np.uint8)


def test_droid_native_sizes_compose_without_resizing_the_canvas():
    wrist, ext1, ext2 = solid(360, 640, RED), solid(360, 640, GREEN), solid(360, 640, BLUE)
    out = compose({"w": wrist, "a": ext1, "b": ext2}, ["w", "a", "b"], "droid")
    assert out.shape == (*DROID_SIZE, 3)
    assert (out[:360] == RED).all() and (out[360:, :320] == GREEN).all() and (out[360:, 320:] == BLUE).all()


def test_droid_refuses_other_camera_counts(frame):
    with pytest.raises(ValueError, match="exactly three cameras"):
        compose({"a": frame, "b": frame}, ["a", "b"], "droid")


@pytest.mark.parametrize(
    ("src", "dst"), [((360, 640), (180, 320)), ((480, 640), (540, 640)), ((720, 1280), (360, 640))]
)
def test_droid_resize_is_bit_exact_with_torch(src, dst):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    ours, ref = resize_bilinear_truncating(image, *dst), _torch_reference(image, *dst)
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float rounding (FMA) near integers


def test_droid_whole_composite_matches_the_reference_pipeline():
    rng = np.random.default_rng(1)
    frames = {k: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for k in ("w", "a", "b")}
    out = compose(frames, ["w", "a", "b"], "droid")
    canvas = np.zeros((720, 640, 3), np.uint8)
    canvas[:480] = frames["w"]
    canvas[480:, :320] = _torch_reference(frames["a"], 240, 320)
    canvas[480:, 320:] = _torch_reference(frames["b"], 240, 320)
    ref = _torch_reference(canvas, *DROID_SIZE)
    assert out.shape == ref.shape
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


# ---------------------------------------------------------------- single


def test_single_returns_the_frame_itself(frame):
    assert compose({"cam": frame, "other": frame[:10]}, ["cam"], "single") is frame


def test_single_refuses_two_cameras(frame):
    with pytest.raises(ValueError, match="exactly one camera"):
        compose({"a": frame, "b": frame}, ["a", "b"], "single")


# ---------------------------------------------------------------- side_by_side


def test_side_by_side_equal_sizes_is_exact(frame):
    other = frame[::-1].copy()
    out = compose({"left": frame, "right": other}, ["left", "right"], "side_by_side")
    assert out.shape == (240, 640, 3)
    np.testing.assert_array_equal(out[:, :320], frame)
    np.testing.assert_array_equal(out[:, 320:], other)


def test_side_by_side_order_decides_placement():
    out = compose({"r": solid(4, 6, RED), "g": solid(4, 2, GREEN)}, ["g", "r"], "side_by_side")
    assert out.shape == (4, 8, 3)
    assert (out[:, :2] == GREEN).all() and (out[:, 2:] == RED).all()


def test_side_by_side_scales_to_the_first_height_keeping_aspect():
    # first 40x60; second 80x100 -> 40x50; third 20x15 -> 40x30.
    frames = {"a": solid(40, 60, RED), "b": solid(80, 100, GREEN), "c": solid(20, 15, BLUE)}
    out = compose(frames, ["a", "b", "c"], "side_by_side")
    assert out.shape == (40, 60 + 50 + 30, 3)
    assert (out[:, :60] == RED).all() and (out[:, 60:110] == GREEN).all() and (out[:, 110:] == BLUE).all()


def test_scaled_widths_round_half_up():
    # 10x5 to height 3: 5 * 3 / 10 = 1.5 -> 2; 10x25 to height 3: 7.5 -> 8.
    out = compose(
        {"a": solid(3, 4, RED), "b": solid(10, 5, GREEN), "c": solid(10, 25, BLUE)}, ["a", "b", "c"], "side_by_side"
    )
    assert out.shape == (3, 4 + 2 + 8, 3)


# ---------------------------------------------------------------- grid


@pytest.mark.parametrize(("n", "rows", "cols"), [(1, 1, 1), (2, 1, 2), (3, 2, 2), (4, 2, 2), (5, 2, 3), (7, 3, 3)])
def test_grid_shape(n, rows, cols):
    frames = {f"c{i}": solid(6, 8, (i * 30, 10, 10)) for i in range(n)}
    out = compose(frames, list(frames), "grid")
    assert out.shape == (rows * 6, cols * 8, 3)
    for i in range(n):
        r, c = divmod(i, cols)
        assert (out[r * 6 : r * 6 + 6, c * 8 : c * 8 + 8] == (i * 30, 10, 10)).all()
    for i in range(n, rows * cols):  # unused cells are black
        r, c = divmod(i, cols)
        assert not out[r * 6 : r * 6 + 6, c * 8 : c * 8 + 8].any()


def test_grid_letterboxes_wider_and_pillarboxes_taller_frames():
    # Cells are 20x40 (the first camera). The 10x40 frame is relatively wider than a cell, so the width binds:
    # 10x40, 5 black rows above and below. The 40x20 frame is taller, so the height binds: 20x10, 15 black
    # columns either side.
    frames = {"first": solid(20, 40, WHITE), "wide": solid(10, 40, RED), "tall": solid(40, 20, GREEN)}
    out = compose(frames, ["first", "wide", "tall"], "grid")
    assert out.shape == (40, 80, 3)
    wide = out[0:20, 40:80]
    assert not wide[:5].any() and not wide[15:].any() and (wide[5:15] == RED).all()
    tall = out[20:40, 0:40]
    assert not tall[:, :15].any() and not tall[:, 25:].any() and (tall[:, 15:25] == GREEN).all()
    assert not out[20:40, 40:80].any()


def test_grid_upscales_small_frames_to_the_cell():
    out = compose({"a": solid(20, 40, WHITE), "b": solid(5, 10, BLUE)}, ["a", "b"], "grid")
    assert (out[:, 40:] == BLUE).all()


# ---------------------------------------------------------------- wrist_top


def test_wrist_top_droid_three_cameras():
    # Wrist 30x40 over two 30x40 exterior cameras: bottom row 30x80, wrist scaled to width 80 -> 60x80.
    frames = {"wrist": solid(30, 40, WHITE), "ext1": solid(30, 40, RED), "ext2": solid(30, 40, GREEN)}
    out = compose(frames, ["wrist", "ext1", "ext2"], "wrist_top")
    assert out.shape == (60 + 30, 80, 3)
    assert (out[:60] == WHITE).all()
    assert (out[60:, :40] == RED).all() and (out[60:, 40:] == GREEN).all()


def test_wrist_top_two_cameras_equal_size_is_exact(frame):
    wrist = frame[:, ::-1].copy()
    out = compose({"wrist": wrist, "ext": frame}, ["wrist", "ext"], "wrist_top")
    assert out.shape == (480, 320, 3)
    np.testing.assert_array_equal(out[:240], wrist)
    np.testing.assert_array_equal(out[240:], frame)


def test_wrist_top_bottom_row_follows_the_second_camera_height():
    # ext1 20x30 sets the row height; ext2 40x20 -> 20x10; row 20x40; wrist 10x20 -> 20x40 on top.
    frames = {"w": solid(10, 20, WHITE), "e1": solid(20, 30, RED), "e2": solid(40, 20, GREEN)}
    out = compose(frames, ["w", "e1", "e2"], "wrist_top")
    assert out.shape == (20 + 20, 40, 3)
    assert (out[:20] == WHITE).all() and (out[20:, :30] == RED).all() and (out[20:, 30:] == GREEN).all()


def test_wrist_top_needs_two_cameras(frame):
    with pytest.raises(ValueError, match="wrist_top"):
        compose({"w": frame}, ["w"], "wrist_top")


# ---------------------------------------------------------------- validation and resampling


@pytest.mark.parametrize(
    ("frames", "order", "layout", "named"),
    [
        ({"a": solid(2, 2, RED)}, ["a"], "mosaic", "mosaic"),
        ({"a": solid(2, 2, RED)}, ["a", "b"], "side_by_side", "'b'"),
        ({"a": solid(2, 2, RED)}, [], "grid", "no camera"),
        ({"a": solid(2, 2, RED)}, ["a", "a"], "grid", "more than once"),
        ({"a": solid(2, 2, RED)}, "a", "single", "string"),
        ({"a": solid(2, 2, RED), "b": np.zeros((2, 2, 3), np.float32)}, ["a", "b"], "side_by_side", "'b'"),
        ({"a": solid(2, 2, RED), "b": np.zeros((2, 2), np.uint8)}, ["a", "b"], "grid", "'b'"),
        ({"a": solid(2, 2, RED), "b": np.zeros((2, 2, 4), np.uint8)}, ["a", "b"], "wrist_top", "shape"),
        ({"a": solid(2, 2, RED), "b": np.zeros((2, 2, 3), np.uint16)}, ["a", "b"], "grid", "dtype"),
    ],
)
def test_bad_input_is_refused_by_name(frames, order, layout, named):
    with pytest.raises(ValueError, match=named):
        compose(frames, order, layout)


def test_resize_is_bilinear_and_identity_when_same_size(frame):
    assert resize(frame, 240, 320) is frame
    ramp = np.repeat(np.array([[0, 100]], np.uint8)[..., None], 3, axis=2)
    out = resize(ramp, 1, 4)
    assert out.shape == (1, 4, 3)
    assert out[0, 0, 0] == 0 and out[0, 3, 0] == 100 and 0 < out[0, 1, 0] < out[0, 2, 0] < 100


# ---------------------------------------------------------------- plan and max_height


def test_plan_tells_where_each_camera_went():
    frames = {"w": solid(10, 20, WHITE), "e1": solid(20, 30, RED), "e2": solid(40, 20, GREEN)}
    p = plan({n: f.shape[:2] for n, f in frames.items()}, ["w", "e1", "e2"], "wrist_top")
    assert (p.height, p.width) == (40, 40)
    assert p.tiles == (Tile("w", 0, 0, 20, 40), Tile("e1", 20, 0, 20, 30), Tile("e2", 20, 30, 20, 10))
    out = compose(frames, ["w", "e1", "e2"], "wrist_top")
    for t in p.tiles:
        np.testing.assert_array_equal(
            out[t.top : t.top + t.height, t.left : t.left + t.width], resize(frames[t.name], t.height, t.width)
        )


def test_max_height_shrinks_the_plan_edge_to_edge():
    # DROID: three 480x640 cameras under wrist_top make 1440x1280; at most 480 rows -> 480x427.
    sizes = {"wrist": (480, 640), "left": (480, 640), "right": (480, 640)}
    full = plan(sizes, ["wrist", "left", "right"], "wrist_top")
    assert (full.height, full.width) == (1440, 1280)
    small = plan(sizes, ["wrist", "left", "right"], "wrist_top", max_height=480)
    assert (small.height, small.width) == (480, 427)
    wrist, left, right = small.tiles
    assert (wrist.top, wrist.left, wrist.height, wrist.width) == (0, 0, 320, 427)
    assert (left.top, left.height, right.top, right.height) == (320, 160, 320, 160)
    assert left.left == 0 and left.left + left.width == right.left and right.left + right.width == 427


def test_max_height_is_a_ceiling_not_a_target(frame):
    assert compose({"a": frame}, ["a"], "single", max_height=1000) is frame
    assert compose({"a": frame, "b": frame}, ["a", "b"], "side_by_side", max_height=240).shape == (240, 640, 3)
    out = compose({"a": frame, "b": frame}, ["a", "b"], "side_by_side", max_height=120)
    assert out.shape == (120, 320, 3)
    np.testing.assert_array_equal(out[:, :160], resize(frame, 120, 160))
    single = compose({"a": frame}, ["a"], "single", max_height=120)
    np.testing.assert_array_equal(single, resize(frame, 120, 160))


def test_max_height_keeps_grid_letterboxing():
    frames = {"first": solid(20, 40, WHITE), "wide": solid(10, 40, RED), "tall": solid(40, 20, GREEN)}
    out = compose(frames, ["first", "wide", "tall"], "grid", max_height=20)
    assert out.shape == (20, 40, 3)
    assert (out[0:10, 0:20] == WHITE).all()
    wide = out[0:10, 20:40]  # 5x20 centered in a 10x20 cell
    assert not wide[:2].any() and not wide[8:].any() and (wide[3:7] == RED).all()
    assert not out[10:20, 20:40].any()


@pytest.mark.parametrize("layout", ["side_by_side", "grid", "wrist_top"])
@pytest.mark.parametrize("max_height", [None, 97, 13, 1])
def test_tiles_stay_inside_the_canvas_and_apart(layout, max_height):
    rng = np.random.default_rng(0)
    for _ in range(25):
        n = int(rng.integers(2, 6))
        sizes = {f"c{i}": (int(rng.integers(1, 300)), int(rng.integers(1, 300))) for i in range(n)}
        p = plan(sizes, list(sizes), layout, max_height=max_height)
        full = plan(sizes, list(sizes), layout)
        scale = min(1.0, max_height / full.height) if max_height is not None else 1.0
        assert p.height == round(full.height * scale)
        used = np.zeros((p.height, p.width), np.int32)
        for t in p.tiles:
            assert t.height >= 1 and t.width >= 1
            assert 0 <= t.top and t.top + t.height <= p.height and 0 <= t.left and t.left + t.width <= p.width
            used[t.top : t.top + t.height, t.left : t.left + t.width] += 1
        # Tiles never overlap, except where shrinking leaves a tile less than a pixel (it is kept at 1 pixel).
        if all(t.height * scale >= 1 and t.width * scale >= 1 for t in full.tiles):
            assert used.max() == 1


def test_plan_refuses_a_bad_max_height():
    with pytest.raises(ValueError, match="max_height"):
        plan({"a": (2, 2)}, ["a"], "single", max_height=0)
