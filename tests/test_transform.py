"""Any-pixel preprocessing: padding geometry, masks, padding frames, flips (spec section 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from videopanda.data.transform import CLIP_MEAN, CLIP_STD, preprocess_frames, preprocess_image, teacher_geometry


def test_geometry_wide_tall_square_by_hand():
    # 640x360 (wide): short = ceil(224*360/640/14)*14 = ceil(9.0)*14 = 126; 9 patches; before = (16-9)//2*14 = 42
    g = teacher_geometry(360, 640)
    assert (g.height, g.width, g.top, g.left) == (126, 224, 42, 0)
    # 300x200 (tall, h=300 w=200): short = ceil(224*200/300/14)*14 = ceil(10.67)*14 = 154; 11 patches; before = 2*14
    g = teacher_geometry(300, 200)
    assert (g.height, g.width, g.top, g.left) == (224, 154, 0, 28)
    g = teacher_geometry(100, 100)
    assert (g.height, g.width, g.top, g.left) == (224, 224, 0, 0)


def test_student_and_teacher_masks_padding_colour_and_padded_frames():
    frames = np.random.default_rng(0).integers(0, 256, (3, 360, 640, 3), dtype=np.uint8)
    out = preprocess_frames(frames)
    assert out.pixel_values.shape == (8, 4, 448, 448) and out.teacher_pixel_values.shape == (8, 4, 224, 224)
    assert out.num_real_frames == 3
    mask = out.pixel_values[0, 3]
    rows = mask.any(1).nonzero().flatten()
    assert (int(rows.min()), int(rows.max()) + 1) == (84, 84 + 252)  # twice the teacher geometry
    assert mask[84:336].all() and not mask[:84].any() and not mask[336:].any()
    teacher_rows = out.teacher_pixel_values[0, 3].any(1).nonzero().flatten()
    assert (int(teacher_rows.min()), int(teacher_rows.max()) + 1) == (42, 168)
    pad = out.pixel_values[0, :3, :84]  # padding normalises to about zero
    assert pad.abs().max() < 0.02
    expected_pad = (np.floor(255 * np.array(CLIP_MEAN)) / 255 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    torch.testing.assert_close(pad[:, 0, 0], torch.tensor(expected_pad, dtype=torch.float32))
    assert not out.pixel_values[3:].any()  # missing frames: all zero, mask 0


def test_flip_only_in_training_and_identical_on_mask_and_deterministic():
    frames = np.zeros((2, 300, 200, 3), np.uint8)
    frames[:, :, :50] = 255  # bright left edge
    evals = [preprocess_frames(frames, image_size=112, teacher_image_size=56).pixel_values for _ in range(2)]
    assert torch.equal(evals[0], evals[1])
    flipped = None
    for seed in range(8):
        out = preprocess_frames(frames, image_size=112, teacher_image_size=56, train=True,
                                generator=torch.Generator().manual_seed(seed)).pixel_values
        again = preprocess_frames(frames, image_size=112, teacher_image_size=56, train=True,
                                  generator=torch.Generator().manual_seed(seed)).pixel_values
        assert torch.equal(out, again)
        if not torch.equal(out, evals[0]):
            flipped = out
    assert flipped is not None
    torch.testing.assert_close(flipped, evals[0].flip(-1))  # RGB and mask flipped together


def test_image_is_one_frame():
    image = np.full((50, 80, 3), 128, np.uint8)
    out = preprocess_image(image, image_size=112, teacher_image_size=56)
    assert out.pixel_values.shape == (1, 4, 112, 112) and out.num_real_frames == 1


def mask_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the non-zero region of a (H, W) mask, bottom/right exclusive."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def test_tall_and_square_mask_boxes_at_448_and_224():
    # tall 300x200: teacher width 154 (11 patches) at left 28, student twice that: width 308 at left 56
    tall = preprocess_frames(np.full((1, 300, 200, 3), 200, np.uint8), num_frames=1)
    assert mask_box(tall.pixel_values[0, 3]) == (0, 448, 56, 364)
    assert mask_box(tall.teacher_pixel_values[0, 3]) == (0, 224, 28, 182)
    assert tall.pixel_values[0, 3, :, 56:364].all()  # the box is full: 1 on every real pixel
    square = preprocess_frames(np.full((2, 90, 90, 3), 10, np.uint8), num_frames=2)
    assert square.pixel_values[:, 3].all() and square.teacher_pixel_values[:, 3].all()


def test_real_pixels_are_clip_normalised():
    frames = np.full((1, 64, 64, 3), (255, 128, 0), np.uint8)
    out = preprocess_frames(frames, image_size=56, teacher_image_size=28, num_frames=1)
    expected = (torch.tensor([255, 128, 0]) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out.pixel_values[0, :3, 10, 10], expected.float())
    assert out.pixel_values.shape == (1, 4, 56, 56) and out.teacher_pixel_values.shape == (1, 4, 28, 28)


def test_bad_inputs_are_rejected():
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="explicit torch.Generator"):
        preprocess_frames(frames, train=True)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frames(frames.astype(np.float32))
    with pytest.raises(ValueError, match="3 frames for a 2-frame input"):
        preprocess_frames(np.zeros((3, 32, 32, 3), np.uint8), num_frames=2)
    assert preprocess_frames(frames, with_teacher=False).teacher_pixel_values is None


def test_resize_matches_pil_bicubic_as_the_release_resizes():
    rng = np.random.default_rng(1)
    frame = np.kron(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))  # 480x640
    out = preprocess_frames(frame[None], num_frames=1)
    # student geometry: 640 -> 448, 480 -> ceil(224*480/640/14)*14*2 = 336, top = (16-12)//2*14*2 = 56
    std, mean = torch.tensor(CLIP_STD).view(3, 1, 1), torch.tensor(CLIP_MEAN).view(3, 1, 1)
    real = out.pixel_values[0, :3, 56:392] * std + mean
    pil = np.array(Image.fromarray(frame).resize((448, 336), Image.BICUBIC))
    diff = (real * 255 - torch.from_numpy(pil).permute(2, 0, 1).float()).abs()
    assert diff.max() < 2.01 and diff.mean() < 0.1  # within two uint8 levels of PIL, almost always equal
