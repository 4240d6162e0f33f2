"""Reading FER-2013 in both layouts, splits, and clear errors for malformed data."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from conftest import synthetic_images, write_csv
from PIL import Image

from fer.data import LABELS, DataError, load_dataset, parse_csv, resolve_data_path, stratified_indices


def test_csv_splits_and_values(tiny_csv):
    ds = load_dataset(tiny_csv)
    assert set(ds.splits) == {"train", "val", "test"}
    assert [len(ds[s]) for s in ("train", "val", "test")] == [70, 21, 21]
    x, y = synthetic_images(112)
    np.testing.assert_array_equal(ds["train"].x, x[:70])
    np.testing.assert_array_equal(ds["test"].y, y[91:])
    assert ds["val"].rows.tolist() == list(range(70, 91))  # row positions kept for the FER+ join
    assert ds["train"].x.dtype == np.uint8 and ds["train"].x.shape[1:] == (48, 48)
    assert len(ds.checksum) == 64 and ds.layout == "csv"


def test_gzip_csv_equals_plain(tmp_path, tiny_csv):
    gz = write_csv(tmp_path / "fer2013.csv.gz")
    a, b = load_dataset(tiny_csv), load_dataset(gz)
    np.testing.assert_array_equal(a["train"].x, b["train"].x)


def test_second_load_uses_cache(tiny_csv, monkeypatch):
    load_dataset(tiny_csv)
    monkeypatch.setattr("fer.data.parse_csv", lambda p: pytest.fail("cache was not used"))
    assert len(load_dataset(tiny_csv)["train"]) == 70


def test_csv_without_usage_gets_stratified_val(tmp_path):
    x, y = synthetic_images(140)
    p = tmp_path / "nousage.csv"
    p.write_text("emotion,pixels\n" + "".join(f"{y[i]},{' '.join(map(str, x[i].ravel()))}\n" for i in range(140)))
    ds = load_dataset(p, val_fraction=0.2, seed=1)
    assert len(ds["train"]) + len(ds["val"]) == 140
    assert ds["val"].class_counts() == [4] * 7  # 20 per class * 0.2


def _bad_csv(tmp_path, body: str, header: str = "emotion,pixels,Usage"):
    p = tmp_path / "bad.csv"
    p.write_text(header + "\n" + body)
    return p


GOOD = " ".join(["7"] * 2304)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"0,{GOOD},Training\n3,1 2 3,Training\n", "line 3: expected 2304 pixels, found 3"),
        (f"9,{GOOD},Training\n", "line 2: emotion 9 outside 0..6"),
        (f"x,{GOOD},Training\n", "line 2: emotion 'x' is not an integer"),
        (f"0,{GOOD}\n", "line 2: expected 3 columns, found 2"),
        (f"0,{GOOD},Holdout\n", "line 2: Usage 'Holdout'"),
        (f"0,{GOOD},Training\n1,{' '.join(['300'] * 2304)},Training\n", "line 3: pixel values must be"),
        ("", "no data rows"),
    ],
)
def test_malformed_csv_names_file_and_row(tmp_path, body, message):
    p = _bad_csv(tmp_path, body)
    with pytest.raises(DataError) as e:
        parse_csv(p)
    assert message in str(e.value) and str(p) in str(e.value)


def test_wrong_header(tmp_path):
    with pytest.raises(DataError, match="header must be 'emotion,pixels"):
        parse_csv(_bad_csv(tmp_path, f"0,{GOOD}\n", header="label,image"))


def test_empty_and_gz_garbage(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty file"):
        parse_csv(empty)
    gz = tmp_path / "x.csv.gz"
    gz.write_bytes(gzip.compress(b"emotion,pixels,Usage\n1,2,Training\n"))
    with pytest.raises(DataError, match="line 2: expected 2304 pixels"):
        parse_csv(gz)


def test_missing_path_is_helpful(monkeypatch, tmp_path):
    monkeypatch.delenv("FER_DATA", raising=False)
    with pytest.raises(DataError, match="pass --data PATH"):
        resolve_data_path(None)
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_path(tmp_path / "nope.csv")
    monkeypatch.setenv("FER_DATA", str(tmp_path))  # read by Settings, which entry points pass down
    from fer.config import Settings

    assert resolve_data_path(Settings().data) == tmp_path


def _image_tree(root, per_class=10, size=48, test=True):
    x, _ = synthetic_images(per_class * 7)
    for split in ("train", "test") if test else ("train",):
        for c, label in enumerate(LABELS):
            d = root / split / label
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(x[c * per_class + i]).resize((size, size)).save(d / f"{i}.png")
    return root


def test_image_folders_with_stratified_val(tmp_path):
    ds = load_dataset(_image_tree(tmp_path / "fer", size=64), val_fraction=0.2, seed=3)
    assert ds.layout == "folders"
    assert len(ds["test"]) == 70 and ds["test"].class_counts() == [10] * 7
    assert ds["val"].class_counts() == [2] * 7 and ds["train"].class_counts() == [8] * 7
    assert ds["train"].x.shape[1:] == (48, 48)  # resized from 64x64
    again = load_dataset(tmp_path / "fer", val_fraction=0.2, seed=3)
    np.testing.assert_array_equal(ds["val"].x, again["val"].x)  # fixed seed, same split


def test_image_folder_errors(tmp_path):
    root = _image_tree(tmp_path / "fer", per_class=2, test=False)
    (root / "train" / "happy" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png: cannot decode image"):
        load_dataset(root)
    (root / "train" / "happy" / "broken.png").unlink()
    (root / "train" / "bored").mkdir()
    with pytest.raises(DataError, match="unknown emotion folder"):
        load_dataset(root)


def test_stratified_subset_keeps_class_shares():
    y = np.repeat(np.arange(7), [100, 10, 100, 200, 100, 80, 120])
    idx = stratified_indices(y, 0.1, seed=0)
    assert np.bincount(y[idx]).tolist() == [10, 1, 10, 20, 10, 8, 12]
    assert len(np.unique(idx)) == len(idx)


@pytest.mark.data
def test_fer2013_split_sizes_and_class_counts(fer2013):
    expected = {
        "train": [3995, 436, 4097, 7215, 4830, 3171, 4965],
        "val": [467, 56, 496, 895, 653, 415, 607],
        "test": [491, 55, 528, 879, 594, 416, 626],
    }
    for split, counts in expected.items():
        assert fer2013[split].class_counts() == counts
    assert len(fer2013["train"]) == 28709


def test_non_numeric_pixel(tmp_path):
    body = f"0,{GOOD},Training\n1,{' '.join(['5'] * 2303)} abc,Training\n"
    with pytest.raises(DataError, match="line 3: pixel values must be integers"):
        parse_csv(_bad_csv(tmp_path, body))


def write_ferplus(path, votes):
    """A fer2013new.csv: header, then one line of 10 vote counts per FER-2013 row."""
    lines = ["Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"]
    lines += [f"Training,fer{i:07d}.png," + ",".join(map(str, v)) for i, v in enumerate(votes)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ferplus_soft_targets_join_by_row(tmp_path, tiny_csv):
    from fer.data import soft_targets

    ds = load_dataset(tiny_csv, cache_dir=tmp_path / "c")
    n = sum(len(s) for s in ds.splits.values())
    # FER+ columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF.
    votes = [[0] * 10 for _ in range(n)]
    votes[0][:] = [5, 5, 0, 0, 0, 0, 0, 0, 0, 0]  # half neutral, half happy
    votes[1][7] = 10  # all contempt: none of our emotions
    votes[2][4], votes[2][8] = 6, 4  # anger plus "unknown": the unknown votes do not count
    fp = write_ferplus(tmp_path / "fer2013new.csv", votes)
    train = ds["train"]
    t = soft_targets(ds, train, fp, 1.0)
    assert t.shape == (len(train), 7) and np.allclose(t.sum(1), 1)
    pos = {int(r): i for i, r in enumerate(train.rows)}
    neutral, happy, angry = LABELS.index("neutral"), LABELS.index("happy"), LABELS.index("angry")
    assert t[pos[0], neutral] == pytest.approx(0.5) and t[pos[0], happy] == pytest.approx(0.5)
    assert t[pos[1]].argmax() == train.y[pos[1]] and t[pos[1]].max() == 1  # keeps its own label
    assert t[pos[2], angry] == 1
    half = soft_targets(ds, train, fp, 0.5)
    expected = 0.5 * np.eye(7)[train.y[pos[0]]] + 0.5 * t[pos[0]]
    np.testing.assert_allclose(half[pos[0]], expected, atol=1e-6)
    np.testing.assert_allclose(soft_targets(ds, train, fp, 0.0), np.eye(7)[train.y])


def test_ferplus_soft_targets_refuse_a_file_of_another_dataset(tmp_path, tiny_csv):
    from fer.data import soft_targets

    ds = load_dataset(tiny_csv, cache_dir=tmp_path / "c")
    short = write_ferplus(tmp_path / "short.csv", [[1] + [0] * 9] * 5)
    with pytest.raises(DataError, match="rows"):
        soft_targets(ds, ds["train"], short, 1.0)
    n = sum(len(s) for s in ds.splits.values())
    longer = write_ferplus(tmp_path / "long.csv", [[1] + [0] * 9] * (n + 3))
    with pytest.raises(DataError, match="not its FER\\+ labels"):
        soft_targets(ds, ds["train"], longer, 1.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="not a FER\\+ label file"):
        soft_targets(ds, ds["train"], bad, 1.0)
