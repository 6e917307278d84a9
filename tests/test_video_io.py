"""Tests for the media layer (ss4d.media.read / write) and frame selection (ss4d.pipeline.frames)."""
from __future__ import annotations

import os
import shutil
import warnings

import av
import numpy as np
import pytest
from PIL import Image

from ss4d.errors import InputError
from ss4d.media import read as media_read
from ss4d.media import write as media_write
from ss4d.media.read import count_frames, natural_key, read_frames
from ss4d.media.write import write_gif, write_video
from ss4d.pipeline.frames import assign_frames_to_windows, select_frames, split_windows


def _save_png(path, arr):
    Image.fromarray(arr).save(path)
    return path


def _rgb(h=16, w=24, v=0):
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = v
    a[2:6, 3:9] = (10, 200, 30)
    return a


# ----------------------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------------------

def test_natural_sort_key():
    names = ["10.png", "2.png", "1.png", "frame_9.png", "frame_10.png", "0.png"]
    assert sorted(names, key=natural_key) == ["0.png", "1.png", "2.png", "10.png", "frame_9.png", "frame_10.png"]


def test_folder_natural_order_and_ignores_other_files(tmp_path):
    for i in (10, 2, 1, 0):
        _save_png(tmp_path / f"{i}.png", _rgb(v=i * 20))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    clip = read_frames(tmp_path)
    assert clip.names == ["0.png", "1.png", "2.png", "10.png"]
    assert [int(f[0, 0, 0]) for f in clip.frames] == [0, 20, 40, 200]
    assert not clip.has_alpha and clip.frames[0].shape == (16, 24, 3)
    assert clip.fps == media_read.DEFAULT_FPS


def test_list_of_paths_keeps_given_order(tmp_path):
    p = [_save_png(tmp_path / f"{i}.png", _rgb(v=i * 30)) for i in range(3)]
    clip = read_frames([p[2], p[0], p[1]])
    assert [int(f[0, 0, 0]) for f in clip.frames] == [60, 0, 30]


def test_rgba_clip_folder(shared):
    d = shared / "data" / "clips" / "rose"
    clip = read_frames(d, indices=[0, 2, 10, 31])
    assert clip.has_alpha and len(clip) == 4
    assert clip.names == ["0.png", "2.png", "10.png", "31.png"]
    assert clip.indices == [0, 2, 10, 31]
    ref = np.asarray(Image.open(d / "10.png"))
    assert clip.frames[2].shape == (512, 512, 4) and clip.frames[2].dtype == np.uint8
    np.testing.assert_array_equal(clip.frames[2], ref)
    assert count_frames(d) == 32


def test_opaque_alpha_counts_as_no_alpha(tmp_path):
    for i in range(2):
        a = np.concatenate([_rgb(v=i), np.full((16, 24, 1), 255, np.uint8)], axis=2)
        _save_png(tmp_path / f"{i}.png", a)
    clip = read_frames(tmp_path)
    assert not clip.has_alpha and clip.frames[0].shape[2] == 3


def test_mixed_rgb_and_rgba_folder_becomes_rgba(tmp_path):
    _save_png(tmp_path / "0.png", _rgb())
    a = np.zeros((16, 24, 4), np.uint8)
    a[4:8, 4:8] = 255
    _save_png(tmp_path / "1.png", a)
    clip = read_frames(tmp_path)
    assert clip.has_alpha and all(f.shape == (16, 24, 4) for f in clip.frames)
    assert (clip.frames[0][..., 3] == 255).all()


def test_mp4_decoding(shared):
    p = shared / "data" / "videos" / "blooming_rose_fg.mp4"
    clip = read_frames(p, max_frames=3)
    assert len(clip) == 3 and not clip.has_alpha
    assert clip.frames[0].shape == (512, 512, 3) and clip.frames[0].dtype == np.uint8
    assert clip.fps == pytest.approx(16.0)
    assert clip.frames[0][0, 0].tolist() == [255, 255, 255]  # composited on white
    sub = read_frames(p, indices=[0, 2, 31])
    assert sub.indices == [0, 2, 31]
    np.testing.assert_array_equal(sub.frames[1], clip.frames[2])
    assert count_frames(p) == 32
    assert len(read_frames(p, max_frames=1)) == 1  # a single frame on request is fine


def test_webm_with_alpha_and_gif_and_webp(tmp_path):
    # VP9 + alpha written with PyAV, read back with alpha
    path = tmp_path / "a.webm"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libvpx-vp9", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuva420p"
        for i in range(4):
            a = np.zeros((64, 64, 4), np.uint8)
            a[..., 0] = 200
            a[10:40, 10 + i:40 + i, 3] = 255
            for pkt in s.encode(av.VideoFrame.from_ndarray(a, format="rgba")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    clip = read_frames(path)
    assert len(clip) == 4 and clip.has_alpha and clip.frames[0].shape == (64, 64, 4)
    assert clip.frames[0][20, 20, 3] > 200 and clip.frames[0][60, 60, 3] < 50
    assert clip.fps == pytest.approx(10.0)

    frames = [_rgb(32, 32, v=40 * i) for i in range(5)]
    g = write_gif(tmp_path / "x.gif", frames, fps=10)
    clip = read_frames(g)
    assert len(clip) == 5 and clip.fps == pytest.approx(10.0)
    assert abs(int(clip.frames[3][20, 20, 0]) - 120) <= 8

    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(tmp_path / "x.webp", save_all=True, append_images=ims[1:], duration=50, lossless=True)
    clip = read_frames(tmp_path / "x.webp")
    assert len(clip) == 5 and clip.fps == pytest.approx(20.0)
    np.testing.assert_array_equal(clip.frames[2][..., :3], frames[2])


# ----------------------------------------------------------------------------------------------------------------
# input errors
# ----------------------------------------------------------------------------------------------------------------

def test_missing_path():
    with pytest.raises(InputError, match="not found"):
        read_frames("/nonexistent/clip.mp4")
    with pytest.raises(InputError, match="not found"):
        read_frames(["/nonexistent/0.png", "/nonexistent/1.png"])


def test_text_file_renamed_mp4(tmp_path):
    p = tmp_path / "fake.mp4"
    p.write_text("this is not a video\n" * 10)
    with pytest.raises(InputError, match="fake.mp4"):
        read_frames(p)
    q = tmp_path / "fake.xyz"
    q.write_text("neither an image nor a video")
    with pytest.raises(InputError, match="fake.xyz"):
        read_frames(q)


@pytest.mark.parametrize("keep", ["half", "100"])
def test_truncated_mp4(shared, tmp_path, keep):
    src = shared / "data" / "videos" / "blooming_rose_fg.mp4"
    data = src.read_bytes()
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[: len(data) // 2] if keep == "half" else data[:100])
    with pytest.raises(InputError, match="cut.mp4"):
        read_frames(p)


def test_truncated_faststart_mp4(shared, tmp_path):
    """moov atom at the front: the container opens but the frames run out early."""
    src = shared / "data" / "videos" / "blooming_rose_fg.mp4"
    fs = tmp_path / "fs.mp4"
    with av.open(str(src)) as inp, av.open(str(fs), "w", options={"movflags": "faststart"}) as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        for pkt in inp.demux(ist):
            if pkt.dts is None:
                continue
            pkt.stream = ost
            out.mux(pkt)
    assert len(read_frames(fs)) == 32
    cut = tmp_path / "fs_cut.mp4"
    data = fs.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_frames(cut)


def test_corrupt_png(tmp_path):
    good = _rgb(64, 64)
    _save_png(tmp_path / "0.png", good)
    data = bytearray((tmp_path / "0.png").read_bytes())
    data[60:] = os.urandom(len(data) - 60)  # header kept, image data garbage
    (tmp_path / "1.png").write_bytes(bytes(data))
    with pytest.raises(InputError, match="1.png"):
        read_frames(tmp_path)
    d2 = tmp_path / "junk"
    d2.mkdir()
    _save_png(d2 / "0.png", good)
    (d2 / "1.png").write_bytes(os.urandom(300))
    with pytest.raises(InputError, match="1.png"):
        read_frames(d2)


def test_zero_or_one_frame(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no images"):
        read_frames(empty)
    one = tmp_path / "one"
    one.mkdir()
    _save_png(one / "0.png", _rgb())
    with pytest.raises(InputError, match="one readable frame"):
        read_frames(one)
    with pytest.raises(InputError, match="single still image"):
        read_frames(one / "0.png")
    with pytest.raises(InputError):
        read_frames([])


def test_all_transparent(tmp_path):
    for i in range(3):
        a = np.zeros((8, 8, 4), np.uint8)
        a[..., :3] = 120
        _save_png(tmp_path / f"{i}.png", a)
    with pytest.raises(InputError, match="fully transparent"):
        read_frames(tmp_path)


def test_different_sizes(tmp_path):
    _save_png(tmp_path / "0.png", _rgb(16, 24))
    _save_png(tmp_path / "1.png", _rgb(16, 24))
    _save_png(tmp_path / "2.png", _rgb(20, 24))
    with pytest.raises(InputError, match=r"2\.png is 24x20"):
        read_frames(tmp_path)
    # also detected when only some frames are decoded
    with pytest.raises(InputError, match="different sizes"):
        read_frames(tmp_path, indices=[0, 1])


def test_oversized_image_downscaled_with_warning(tmp_path):
    for i in range(2):
        a = np.zeros((20, 9000, 3), np.uint8)
        a[:, : 4500 + i] = 255
        _save_png(tmp_path / f"{i}.png", a)
    with pytest.warns(UserWarning, match="max_side=8192"):
        clip = read_frames(tmp_path)
    assert clip.frames[0].shape == (18, 8192, 3)
    with pytest.warns(UserWarning):
        small = read_frames(tmp_path, max_side=900)
    assert small.frames[1].shape == (2, 900, 3)


def test_video_downscale(shared):
    with pytest.warns(UserWarning, match="max_side=128"):
        clip = read_frames(shared / "data" / "videos" / "cat_king_fg.mp4", max_side=128, max_frames=2)
    assert clip.frames[0].shape == (128, 128, 3)


# ----------------------------------------------------------------------------------------------------------------
# selection / windows
# ----------------------------------------------------------------------------------------------------------------

def test_select_frames():
    idx = select_frames(300, num=32)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 299 and idx == sorted(set(idx))
    assert select_frames(20, num=32) == list(range(20))
    assert select_frames(10) == list(range(10))
    assert select_frames(10, num=1) == [0]
    assert select_frames(10, stride=3) == [0, 3, 6, 9]
    assert select_frames(100, num=4, stride=5) == [0, 5, 10, 15]
    assert select_frames(10, num=4, mode="first") == [0, 1, 2, 3]
    for bad in (dict(n_total=0), dict(n_total=5, num=0), dict(n_total=5, stride=0), dict(n_total=5, mode="x")):
        with pytest.raises(InputError):
            select_frames(**bad)


def test_split_windows_and_assignment():
    assert split_windows(20, 32, 8) == [range(0, 20)]
    w = split_windows(100, 32, 8)
    assert [r.start for r in w] == [0, 24, 48, 68]
    assert all(len(r) == 32 for r in w) and w[-1].stop == 100
    covered = set().union(*[set(r) for r in w])
    assert covered == set(range(100))
    assign = assign_frames_to_windows(100, w)
    assert len(assign) == 100
    for t, (wi, k) in enumerate(assign):
        assert w[wi].start + k == t
    # frames in the middle of an overlap switch windows once, monotonically
    win_of = [wi for wi, _ in assign]
    assert win_of == sorted(win_of) and win_of[0] == 0 and win_of[-1] == 3
    assert win_of[27] == 0 and win_of[28] == 1  # overlap 24..31: centre 27.5
    with pytest.raises(InputError):
        split_windows(100, 32, 32)
    with pytest.raises(InputError):
        split_windows(100, 0, 0)


# ----------------------------------------------------------------------------------------------------------------
# writers
# ----------------------------------------------------------------------------------------------------------------

def test_write_video_roundtrip_odd_size(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for i in range(6):
        f = np.full((47, 33, 3), 40, np.uint8)
        f[10:30, 5 + i:20 + i] = (220, 60, 30)
        frames.append(f)
    out = write_video(tmp_path / "sub" / "v.mp4", frames, fps=12)
    assert out == tmp_path / "sub" / "v.mp4" and out.exists()
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert (s.width, s.height) == (34, 48)
    clip = read_frames(out)
    assert len(clip) == 6 and clip.fps == pytest.approx(12.0)
    err = np.abs(clip.frames[2][:47, :33].astype(int) - frames[2].astype(int)).mean()
    assert err < 6
    assert os.listdir(out.parent) == ["v.mp4"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of the temp file
    # overwrite atomically with different content
    write_video(out, [f[::-1] for f in frames[:3]] + [rng.integers(0, 255, (47, 33, 3), np.uint8)], fps=12)
    assert len(read_frames(out)) == 4 and os.listdir(out.parent) == ["v.mp4"]


def test_write_video_falls_back_to_gif(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("encoder unavailable")

    monkeypatch.setattr(media_write, "_encode_av", boom)
    frames = [_rgb(16, 16, v=i * 50) for i in range(3)]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = write_video(tmp_path / "v.mp4", frames, fps=8)
    assert out == tmp_path / "v.gif" and any("encoder unavailable" in str(r.message) for r in rec)
    assert sorted(os.listdir(tmp_path)) == ["v.gif"]
    assert len(read_frames(out)) == 3


def test_write_gif_is_atomic_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "a.gif"
    write_gif(target, [_rgb(8, 8), _rgb(8, 8, 9)], fps=5)
    before = target.read_bytes()

    def bad_save(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", bad_save)
    with pytest.raises(OSError):
        write_gif(target, [_rgb(8, 8, 100), _rgb(8, 8, 200)], fps=5)
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["a.gif"]


def test_write_video_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError):
        write_video(tmp_path / "x.mp4", [], fps=10)
    with pytest.raises(ValueError):
        write_video(tmp_path / "x.mp4", [np.zeros((4, 4, 3), np.float32)], fps=10)
    with pytest.raises(ValueError):
        write_video(tmp_path / "x.mp4", [np.zeros((4, 4, 3), np.uint8)], fps=0)


def test_unreadable_permissions(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can read anything")
    d = tmp_path / "clip"
    d.mkdir()
    for i in range(2):
        _save_png(d / f"{i}.png", _rgb())
    os.chmod(d / "1.png", 0)
    try:
        with pytest.raises(InputError, match="1.png"):
            read_frames(d)
    finally:
        os.chmod(d / "1.png", 0o644)
        shutil.rmtree(d)
