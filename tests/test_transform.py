"""Any-pixel preprocessing: padding geometry, masks, padding frames, flips (spec section 1)."""

from __future__ import annotations

import numpy as np
import torch

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
