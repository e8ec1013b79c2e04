"""Decoding real files of every container: the sampled frames, seeking, bad files."""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest
from PIL import Image

from videopanda.data.decode import VideoDecodeError, find_video_file, probe_video, read_image, read_video_frames
from videopanda.data.sampling import sample_frame_indices
from videopanda.data.video_writer import write_video


def indexed_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame t shows t in base 40: top half grey 6*(t//40), bottom half 6*(t%40) (survives lossy codecs)."""
    t = np.arange(num_frames)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[:, : height // 2] = (6 * (t // 40)).astype(np.uint8)[:, None, None, None]
    frames[:, height // 2 :] = (6 * (t % 40)).astype(np.uint8)[:, None, None, None]
    return frames


def frame_level(frame: np.ndarray) -> int:
    """The frame index written by ``indexed_frames``."""
    half = frame.shape[0] // 2
    high = round(float(frame[4 : half - 4, 8:-8].mean()) / 6)
    low = round(float(frame[half + 4 : -4, 8:-8].mean()) / 6)
    return high * 40 + low


@pytest.mark.parametrize("ext", ["mp4", "avi", "gif", "webm", "mkv"])
def test_every_container_gives_the_sampled_frames(tmp_path, ext):
    path = write_video(tmp_path / f"v.{ext}", indexed_frames(40), fps=10)
    info = probe_video(path)
    assert info.frame_count == 40 and round(info.fps) == 10
    frames = read_video_frames(path)
    expected = sample_frame_indices(40, 10.0)  # 1 fps: 0, 10, 20, 30 -> stride rule 0, 5, ..., 35
    assert frames.shape == (8, 48, 64, 3)
    assert [frame_level(f) for f in frames] == expected


@pytest.mark.parametrize("ext", ["mp4", "avi", "gif", "webm", "mkv"])
def test_torchcodec_and_pyav_decode_the_same_frames(tmp_path, ext):
    """Same frames: the same sampled indices (read back from the pixels) and identical RGB bytes."""
    pytest.importorskip("torchcodec.decoders", exc_type=ImportError)  # optional extra, needs FFmpeg's libraries
    path = write_video(tmp_path / f"long.{ext}", indexed_frames(480, 32, 48), fps=10)  # seeks in both backends
    pyav = read_video_frames(path, backend="pyav")
    torchcodec = read_video_frames(path, backend="torchcodec")
    assert [frame_level(f) for f in torchcodec] == [frame_level(f) for f in pyav] == sample_frame_indices(480, 10.0)
    np.testing.assert_array_equal(torchcodec, pyav)


def test_unknown_backend_is_refused(tmp_path):
    path = write_video(tmp_path / "v.mp4", indexed_frames(8), fps=8)
    with pytest.raises(ValueError, match="unknown video decoding backend 'opencv': choose one of pyav, torchcodec"):
        read_video_frames(path, backend="opencv")


@pytest.mark.parametrize("ext", ["mp4", "mkv", "webm", "avi"])
def test_seeking_in_a_long_video_equals_decoding_everything(tmp_path, ext, caplog):
    caplog.set_level(logging.DEBUG, logger="videopanda.data.decode")
    path = write_video(tmp_path / f"long.{ext}", indexed_frames(480, 32, 48), fps=10)  # 48 s, small frames
    expected = sample_frame_indices(480, 10.0)  # 1 fps -> 48 positions; linspace(0, 47, 8) -> 0 6 13 20 26 33 40 47
    assert expected == [0, 60, 130, 200, 260, 330, 400, 470]  # gaps > SEEK_GAP_FRAMES: every frame is a seek
    seeking = read_video_frames(path)
    assert [frame_level(f) for f in seeking] == expected
    assert "decoding sequentially" not in caplog.text  # every seek landed before its target
    np.testing.assert_array_equal(seeking, read_video_frames(path, seek=False))


def test_clip_reads_frames_inside_the_clip(tmp_path):
    path = write_video(tmp_path / "clip.mkv", indexed_frames(300), fps=10)  # 30 s
    frames = read_video_frames(path, clip=(12.0, 20.0))  # frames 120..200, 1 fps gives 9 positions
    assert [frame_level(f) for f in frames] == [120, 130, 140, 150, 160, 170, 180, 200]


def test_missing_empty_and_corrupt_files_name_the_path(tmp_path):
    with pytest.raises(VideoDecodeError, match="missing.mp4: file not found"):
        read_video_frames(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty.mp4: empty file"):
        read_video_frames(tmp_path / "empty.mp4")
    (tmp_path / "garbage.avi").write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoDecodeError, match="garbage.avi"):
        read_video_frames(tmp_path / "garbage.avi")


@pytest.mark.parametrize("ext", ["mp4", "mkv", "webm", "avi"])
def test_truncated_files_raise_naming_the_path(tmp_path, ext):
    # mp4 loses its index, mkv/webm fall short of the duration in their header, avi of its frame count
    path = write_video(tmp_path / f"cut.{ext}", indexed_frames(200), fps=10)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(VideoDecodeError, match=f"cut.{ext}"):
        read_video_frames(path)


def test_find_video_file_tries_extensions_and_activitynet_prefix(tmp_path):
    write_video(tmp_path / "v_abc.mkv", indexed_frames(4), fps=4)
    write_video(tmp_path / "clip1.avi", indexed_frames(4), fps=4)
    assert find_video_file(tmp_path, "abc").name == "v_abc.mkv"
    assert find_video_file(tmp_path, "clip1").name == "clip1.avi"
    assert find_video_file(tmp_path, "nothing") is None


def test_frame_count_by_demuxing_when_the_container_has_none(tmp_path):
    path = write_video(tmp_path / "n.webm", indexed_frames(37), fps=10)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # webm stores no frame count
    assert probe_video(path).frame_count == 37


def test_read_image_png_and_gif_and_bad_image(tmp_path):
    image = indexed_frames(1)[0].copy()
    image[:10, :10] = (255, 0, 0)
    Image.fromarray(image).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), image[None])  # lossless, exact
    path = write_video(tmp_path / "one.gif", indexed_frames(1), fps=1)
    assert read_image(path).shape == (1, 48, 64, 3)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(VideoDecodeError, match="bad.jpg: unreadable image"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(VideoDecodeError, match="nope.png: file not found"):
        read_image(tmp_path / "nope.png")
