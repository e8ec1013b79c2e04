"""Frame sampling against hand-computed expectations for every branch of spec section 1."""

import pytest

from videopanda.data.sampling import sample_frame_indices


def test_long_video_takes_eight_of_the_one_per_second_positions():
    # 30 fps, 20 s: positions 0, 30, ..., 570 (20 of them); linspace(0, 19, 8) -> 0 2 5 8 10 13 16 19
    assert sample_frame_indices(600, 30.0) == [0, 60, 150, 240, 300, 390, 480, 570]


def test_exactly_eight_positions_kept():
    assert sample_frame_indices(240, 30.0) == [0, 30, 60, 90, 120, 150, 180, 210]


def test_short_video_uses_the_stride_rule():
    # 16 frames at 8 fps: 1 fps gives [0, 8] -> m = 8, stride = 15 // 7 = 2
    assert sample_frame_indices(16, 8.0) == [0, 2, 4, 6, 8, 10, 12, 14]
    # 5 frames: m = 5, stride = 4 // 4 = 1
    assert sample_frame_indices(5, 25.0) == [0, 1, 2, 3, 4]


def test_one_frame_video_and_zero_fps_do_not_crash():
    assert sample_frame_indices(1, 30.0) == [0]
    # fps 0.3 rounds to 0: stride 1 -> 10 positions -> linspace over them
    assert sample_frame_indices(10, 0.3) == [0, 1, 2, 3, 5, 6, 7, 9]


def test_clip_restricts_the_range_first():
    # 30 fps, clip 10 s .. 14 s -> frames 300..420, 1 fps positions 300, 330, ..., 420 (5) -> stride rule
    # m = 8, stride = 120 // 7 = 17
    assert sample_frame_indices(3000, 30.0, clip=(10.0, 14.0)) == [300 + 17 * i for i in range(8)]


def test_empty_video_is_an_error():
    with pytest.raises(ValueError, match="at least one frame"):
        sample_frame_indices(0, 30.0)


def test_num_frames_is_a_parameter():
    # 20 positions (0, 30, ..., 570), linspace(0, 19, 4) = 0, 6.33, 12.67, 19 -> 0 6 12 19
    assert sample_frame_indices(600, 30.0, num_frames=4) == [0, 180, 360, 570]
    # 3 frames at 30 fps: one position -> m = 3, stride = 2 // 2 = 1
    assert sample_frame_indices(3, 30.0, num_frames=4) == [0, 1, 2]


def test_clip_at_the_end_and_clip_without_fps():
    # clip past the end: the range shrinks to the last frame
    assert sample_frame_indices(100, 10.0, clip=(50.0, 60.0)) == [99]
    # fps 0: seconds can't be converted, the clip is ignored; stride 1 over 5 frames -> stride rule
    assert sample_frame_indices(5, 0.0, clip=(1.0, 2.0)) == [0, 1, 2, 3, 4]
