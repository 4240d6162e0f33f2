"""Video on real (made) videos: tracks keep their ids through a pan, change at a cut, smoothing
stops the flicker; the tracker on its own; the fer video command."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest
import videos
from typer.testing import CliRunner

from fer.video import Tracker, VideoError, VideoTooLong, iou, process_video

LABELS = ["a", "b"]


def flips(labels):
    return sum(x != y for x, y in itertools.pairwise(labels))


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_tracker_keeps_ids_forgets_lost_faces_and_smooths():
    t = Tracker(LABELS, alpha=0.5, max_missed=1)
    p = np.array([[0.9, 0.1]], np.float32)
    (first,) = t.update(0, [(0, 0, 10, 10)], p)
    (same,) = t.update(1, [(2, 0, 10, 10)], np.array([[0.1, 0.9]], np.float32))
    assert same is first and same.smoothed == pytest.approx([0.5, 0.5])  # halfway: alpha 0.5
    t.update(2, [], np.zeros((0, 2), np.float32))
    t.update(3, [], np.zeros((0, 2), np.float32))  # missed twice > max_missed: the track ends
    (new,) = t.update(4, [(2, 0, 10, 10)], p)
    assert new.id == 2 and [tr.id for tr in t.tracks()] == [1, 2]


def test_a_pan_is_one_track(shipped_service, tmp_path):
    r = process_video(shipped_service, videos.pan(tmp_path / "pan.mp4"))
    assert r.frames_analyzed == 30 and r.fps == pytest.approx(videos.FPS)
    (track,) = r.tracks
    assert track["frames_seen"] == 30 and track["dominant_emotion"] == "happy"
    xs = [f["x"] for f in r.frames]
    assert xs[-1] - xs[0] > 300  # the face really moved across the frame


def test_a_cut_starts_a_new_track(shipped_service, tmp_path):
    r = process_video(shipped_service, videos.cut(tmp_path / "cut.mp4"))
    assert [(t["id"], t["first_frame"], t["frames_seen"]) for t in r.tracks] == [(1, 0, 15), (2, 15, 15)]
    assert {f["track"] for f in r.frames if f["frame"] >= 15} == {2}


def test_smoothing_stops_the_flicker(shipped_service, tmp_path):
    path = videos.flicker(tmp_path / "flicker.mp4")
    raw = process_video(shipped_service, path, alpha=1.0)
    smooth = process_video(shipped_service, path, alpha=0.4)
    assert len(smooth.tracks) == 1  # the two faces sit on one spot: one track
    assert flips([f["smoothed_emotion"] for f in raw.frames]) >= 8
    assert flips([f["smoothed_emotion"] for f in smooth.frames]) < flips([f["emotion"] for f in smooth.frames]) / 4
    assert smooth.tracks[0]["emotion_share"]["happy"] > raw.tracks[0]["emotion_share"]["happy"]


def test_every_and_fps_pick_frames(shipped_service, tmp_path):
    path = videos.pan(tmp_path / "pan.mp4")
    assert process_video(shipped_service, path, every=3).frames_analyzed == 10
    assert process_video(shipped_service, path, fps=5).frames_analyzed == 15  # 10 fps source


def test_bad_and_long_videos_are_refused(shipped_service, tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"not a video at all")
    with pytest.raises(VideoError):
        process_video(shipped_service, tmp_path / "x.mp4")
    with pytest.raises(VideoTooLong, match="the limit is 1 s"):
        process_video(shipped_service, videos.pan(tmp_path / "pan.mp4"), max_seconds=1)


def test_fer_video_writes_csv_annotated_video_and_track_summary(tmp_path):
    from fer.cli import app

    path = videos.cut(tmp_path / "cut.mp4")
    r = CliRunner().invoke(
        app,
        ["video", str(path), "--out", str(tmp_path / "out.mp4"), "--csv", str(tmp_path / "frames.csv"), "--every", "2"],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout[r.stdout.index("{") :])
    assert summary["frames_analyzed"] == 15 and [t["id"] for t in summary["tracks"]] == [1, 2]
    rows = list(csv.DictReader((tmp_path / "frames.csv").open()))
    assert len(rows) == 15 and {"track", "smoothed_emotion", "p_happy"} <= set(rows[0])
    import cv2

    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 15
    cap.release()
