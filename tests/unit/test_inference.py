"""`Predictor` and `EmotionService` directly, on the shipped production model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EXAMPLES
from PIL import Image

from fer.inference import Box, FaceResult, Predictor


@pytest.fixture(scope="module")
def predictor(shipped_service):
    return shipped_service.predictor


def test_preprocessing_comes_from_the_artifact(predictor):
    norm = predictor.meta.normalize
    x = predictor.preprocess(np.full((2, 48, 48), 255, np.uint8))
    assert x.shape == (2, 1, 48, 48) and x.dtype == np.float32
    assert x[0, 0, 0, 0] == pytest.approx((1.0 - norm.mean) / norm.std, rel=1e-5)
    with pytest.raises(ValueError, match="expected 48x48 crops"):
        predictor.predict_proba(np.zeros((1, 40, 40), np.uint8))


def test_probabilities_batching_and_flip_averaging(predictor):
    x = np.random.default_rng(0).integers(0, 255, (5, 48, 48), dtype=np.uint8)
    p = predictor.predict_proba(x)
    assert p.shape == (5, 7) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert np.allclose(predictor.predict_proba(x, batch_size=2), p, atol=1e-6)  # chunking changes nothing
    flipped = predictor.predict_proba(x[:, :, ::-1])
    mirrored = predictor.policy.model_copy(update={"flip": True})  # the model's own policy, plus the mirror
    assert np.allclose(predictor.predict_proba(x, policy=mirrored), (p + flipped) / 2, atol=1e-6)
    assert predictor.predict_proba(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)


def test_predictions_name_the_top_class(predictor):
    probs = np.eye(7, dtype=np.float32)[[3, 6]]
    preds = predictor.predictions(probs)
    assert [p.emotion for p in preds] == ["happy", "neutral"] and preds[0].confidence == 1.0
    assert list(preds[0].probabilities) == predictor.labels


def test_service_analysis_has_one_face_shape(shipped_service):
    rgb = np.asarray(Image.open(EXAMPLES / "astronaut.jpg").convert("RGB"))
    a = shipped_service.analyze(rgb)
    assert (a.width, a.height, a.is_crop) == (512, 512, False) and len(a.faces) == 1
    face = a.primary
    assert isinstance(face, FaceResult) and isinstance(face.box, Box)
    assert face.emotion == max(face.probabilities, key=face.probabilities.get)
    assert a.detect_s > 0 and a.infer_s > 0
    assert set(face.model_dump()) == {"box", "emotion", "confidence", "probabilities", "detection_score"}


def test_an_artifact_reports_its_own_name(shipped_service):
    p = Predictor(shipped_service.predictor.artifact_dir, name="x", version=7)
    assert (p.name, p.version) == ("x", "7")


@pytest.mark.parametrize("name", ["astronaut.jpg", "grace_hopper.jpg", "group.jpg"])
def test_reduced_scale_decoding_finds_the_same_faces(shipped_service, name):
    # A 12 MP-class JPEG of each shipped photo, decoded reduced (PIL draft) and in full: the same
    # faces, boxes within a few full-size pixels, the same emotions.
    import io

    from fer.images import decode_image, decode_photo

    src = Image.open(EXAMPLES / name).convert("RGB")
    big = src.resize((4000, round(4000 * src.height / src.width)), Image.LANCZOS)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=92)
    data = buf.getvalue()
    photo = decode_photo(data)
    assert max(photo.rgb.shape[:2]) < 4000 and (photo.width, photo.height) == big.size  # really reduced
    reduced = shipped_service.analyze(photo.rgb, pixel_scale=photo.pixel_scale).scaled(photo)  # as served
    full = shipped_service.analyze(decode_image(data))
    assert len(reduced.faces) == len(full.faces) >= 1 and (reduced.width, reduced.height) == (full.width, full.height)
    for r, f in zip(reduced.faces, full.faces, strict=True):
        assert abs(r.box.x - f.box.x) <= 12 and abs(r.box.y - f.box.y) <= 12 and abs(r.box.w - f.box.w) <= 16
        assert r.emotion == f.emotion
