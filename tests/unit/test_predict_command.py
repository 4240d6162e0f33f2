"""`fer predict` on real files: folders, globs, unreadable files, JSONL/CSV, annotated images."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
from conftest import EXAMPLES
from PIL import Image
from typer.testing import CliRunner

from fer.cli import app


def tree(tmp_path):
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLES / "group.jpg", tmp_path / "photos" / "group.jpg")
    shutil.copy(EXAMPLES / "astronaut.jpg", tmp_path / "photos" / "sub" / "astronaut.jpg")
    (tmp_path / "photos" / "broken.jpg").write_bytes((EXAMPLES / "astronaut.jpg").read_bytes()[:2000])  # truncated
    Image.fromarray(np.full((300, 300, 3), 127, np.uint8)).save(tmp_path / "photos" / "blank.png")
    return tmp_path / "photos"


def run(*args):
    return CliRunner().invoke(app, ["predict", *args], catch_exceptions=False)


def test_a_folder_to_jsonl_on_stdout_with_error_rows_and_a_summary(tmp_path):
    r = run(str(tree(tmp_path)), str(tmp_path / "missing.jpg"), "--threads", "2")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    by_file = {}
    for row in rows:
        by_file.setdefault(row["file"].rsplit("/", 1)[-1], []).append(row)
    assert [row["face"] for row in by_file["group.jpg"]] == [0, 1, 2]
    assert by_file["astronaut.jpg"][0]["emotion"] == "happy"  # found in the sub-folder
    assert set(by_file["astronaut.jpg"][0]) >= {"x", "y", "w", "h", "confidence", "p_happy", "p_neutral"}
    assert by_file["broken.jpg"][0]["error"] == "invalid_image"
    assert by_file["blank.png"][0]["error"] == "no_face"
    assert by_file["missing.jpg"][0]["error"] == "unreadable"
    assert "5 files, 4 faces" in r.stderr and "3 without a result" in r.stderr


def test_csv_out_a_glob_and_annotated_images(tmp_path):
    photos = tree(tmp_path)
    out, ann = tmp_path / "faces.csv", tmp_path / "annotated"
    r = run(str(photos / "*.jpg"), "--out", str(out), "--annotate", str(ann))
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert [row["file"].rsplit("/", 1)[-1] for row in rows] == ["broken.jpg", "group.jpg", "group.jpg", "group.jpg"]
    assert rows[1]["emotion"] and float(rows[1]["p_happy"]) >= 0 and rows[0]["error"] == "invalid_image"
    assert [p.name for p in ann.iterdir()] == ["group.annotated.jpg"]


def test_bad_arguments_are_clear(tmp_path):
    r = run(str(tmp_path / "nothing-here" / "*.jpg"))
    assert r.exit_code == 2 and "no images found" in r.output
    r = run(str(EXAMPLES / "group.jpg"), "--out", str(tmp_path / "x.txt"))
    assert r.exit_code == 2 and ".jsonl or .csv" in r.output
