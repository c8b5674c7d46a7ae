"""The profile pipeline's parts: corrections (MAD, sphering, Harmony, ComBat), profiles, the embedding cache."""

from __future__ import annotations

import hashlib
import json
import types

import numpy as np
import pytest

from benchmark.core.profiles import corrections as pc
from benchmark.core.profiles.embedding_cache import EmbeddingCache, image_digests, set_digest
from benchmark.core.profiles.data import TARGET, UNKNOWN, Profiles, concat, profiles_of, well_profiles
from benchmark.core.profiles.pipeline import ProfileClassifier, correct, parse_grid
from benchmark.errors import MethodError


def _profiles(n_batches=3, per_batch=60, d=6, offset=4.0, seed=0, plate_per_batch=True) -> Profiles:
    """Two classes and DMSO on ``n_batches`` plates; every plate shifted by its own offset."""
    rng = np.random.default_rng(seed)
    parts = []
    for b in range(n_batches):
        shift = offset * rng.normal(size=d)
        for label in (-1, 0, 1):
            centre = np.zeros(d) if label < 0 else 3.0 * np.eye(d)[label]
            x = centre + shift + rng.normal(size=(per_batch, d))
            plate = f"p{b}" if plate_per_batch else "p0"
            parts.append(profiles_of(x, plate, f"s{b}", f"s{b}_b", [f"W{label}{i:02d}" for i in range(per_batch)],
                                     np.full(per_batch, label), label < 0))
    return concat(parts)


def _batch_spread(p: Profiles, x: np.ndarray) -> float:
    """Mean distance of each batch's DMSO mean to the overall DMSO mean."""
    dmso = p.is_control
    centre = x[dmso].mean(axis=0)
    return float(np.mean([np.linalg.norm(x[dmso & (p.plate == b)].mean(axis=0) - centre)
                          for b in np.unique(p.plate)]))


# ----------------------------------------------------------------------------- per-plate corrections

def test_mad_gives_median_zero_and_mad_one_on_the_plates_dmso():
    rng = np.random.default_rng(0)
    controls = rng.gamma(2.0, 3.0, size=(101, 5)) + np.arange(5) * 10
    y = pc.PlateMAD().plate("p1", controls)(controls)
    np.testing.assert_allclose(np.median(y, axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(1.4826 * np.median(np.abs(y - np.median(y, axis=0)), axis=0), 1, rtol=1e-5)


def test_mad_drops_features_whose_dmso_mad_is_zero_on_a_plate():
    p = _profiles()
    x = p.x.copy()
    x[:, 2] = 0.0
    x[p.plate == "p1", 3] = 0.0  # zero on one plate's DMSO only: still dropped
    mad = pc.PlateMAD().fit(p.with_x(x))
    assert mad.describe()["features_kept"] == 4 and mad.describe()["features_dropped"] == 2
    out = correct(mad, p.with_x(x))
    assert out.x.shape == (len(p), 4) and np.isfinite(out.x).all() and np.abs(out.x).max() < 100


def test_a_per_plate_correction_with_no_usable_feature_is_a_clear_error():
    p = _profiles()
    with pytest.raises(MethodError, match="no feature varies over the DMSO images of every plate"):
        pc.PlateMAD().fit(p.with_x(np.zeros_like(p.x)))


@pytest.mark.parametrize("n_controls", [0, 1])
def test_fewer_than_two_dmso_images_name_the_plate(n_controls):
    with pytest.raises(MethodError, match=f"plate P9 has {n_controls} DMSO images; robust MAD normalisation needs"):
        pc.PlateMAD().plate("P9", np.ones((n_controls, 4)))
    with pytest.raises(MethodError, match="plate P9 .* ZCA-cor sphering needs"):
        pc.PlateSphering().plate("P9", np.ones((n_controls, 4)))


def test_sphering_gives_identity_covariance_on_the_plates_dmso():
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(6, 6))
    controls = rng.normal(size=(400, 6)) @ mix + 5.0
    y = pc.PlateSphering().plate("p1", controls)(controls)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(6), atol=1e-4)
    # ZCA: the whitening closest to the (standardised) input, unlike any other rotation
    z = (controls - controls.mean(0)) / controls.std(0)
    assert np.abs(y - z).mean() < np.abs(y[:, ::-1] - z).mean()


def test_sphering_of_a_constant_feature_is_a_clear_error():
    controls = np.random.default_rng(0).normal(size=(20, 3))
    controls[:, 1] = 1.0
    with pytest.raises(MethodError, match="ZCA-cor sphering cannot be fitted on these 20 DMSO embeddings"):
        pc.zca_cor(controls)


def test_no_correction_is_the_identity():
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(pc.NoCorrection().plate("p", x[:0])(x), x)


# ----------------------------------------------------------------------------- joint corrections

@pytest.mark.parametrize("make", [lambda: pc.Harmony("plate", threads=1), lambda: pc.ComBat("plate")],
                         ids=["harmony", "combat"])
def test_joint_corrections_reduce_a_batch_offset_without_labels(make):
    p = _profiles(offset=1.5)  # batches that overlap (Harmony cannot mix batches that share no cluster)
    correction = make().fit(p)
    after = correct(correction, p)
    assert _batch_spread(p, after.x) < 0.5 * _batch_spread(p, p.x)
    # the class signal survives: class 0 and 1 stay apart on every plate
    for plate in np.unique(p.plate):
        on = p.plate == plate
        m0, m1 = (after.x[on & (p.label == k)].mean(0) for k in (0, 1))
        assert np.linalg.norm(m0 - m1) > 2.0
    # no labels: the same fit with every label hidden gives the same correction
    hidden = Profiles(p.x, p.plate, p.source, p.batch, np.full(len(p), ""), np.full(len(p), UNKNOWN), p.is_control)
    np.testing.assert_allclose(correct(make().fit(hidden), p).x, after.x, atol=1e-5)


def test_combat_affine_map_reproduces_pycombat_on_the_fitted_images_and_extends_to_new_ones():
    p = _profiles(per_batch=40)
    x, batches = p.x.astype(np.float64), p.plate.astype(str)
    z = pc.combat_embeddings(x, batches)
    combat = pc.ComBat("plate").fit(p)
    np.testing.assert_allclose(correct(combat, p).x, z, atol=1e-4)
    new = x[batches == "p1"][:5] + 0.1
    slope, intercept = combat.affine_["p1"]
    np.testing.assert_allclose(combat.plate("p1", new[:0])(new), new * slope + intercept, rtol=1e-5)


def test_harmony_reproduces_its_fit_and_moves_unseen_images_like_their_neighbours():
    p = _profiles(per_batch=40)
    z = pc.harmony_embeddings(p.x, p.plate.astype(str), theta=2.0, sigma=0.1, n_clusters=0, max_iter=10, seed=0)
    harmony = pc.Harmony("plate").fit(p)
    np.testing.assert_allclose(correct(harmony, p).x, z, atol=1e-4)
    on = p.plate == "p2"
    unseen = p.x[on][:3] + 0.01
    moved = harmony.plate("p2", p.x[:0])(unseen) - unseen
    np.testing.assert_allclose(moved, (z - p.x)[on][:3], atol=0.2)


def test_source_as_batch_groups_the_target_plates():
    p = _profiles()
    source = np.where(p.plate == "p2", TARGET, p.source)
    q = Profiles(p.x, p.plate, source, p.batch, p.well, p.label, p.is_control)
    combat = pc.ComBat("source").fit(q)
    assert combat.batch_of_ == {"p0": "s0", "p1": "s1", "p2": TARGET}
    assert combat.describe()["n_batches"] == 3


def test_harmony_shape_of_either_harmonypy_version_is_accepted(monkeypatch):
    x = np.random.default_rng(0).normal(size=(30, 4))
    calls = []

    def fake(z):
        return lambda data, meta, key, **kw: calls.append(kw) or types.SimpleNamespace(Z_corr=z)

    harmonypy = pc.require("harmonypy", "harmonypy", "test")
    monkeypatch.setattr(harmonypy, "run_harmony", fake(x.T + 1))  # harmonypy < 2: d x n
    np.testing.assert_allclose(pc.harmony_embeddings(x, np.arange(30) % 2, theta=2, sigma=0.1, n_clusters=0,
                                                      max_iter=2, seed=0), x + 1)
    assert calls[0]["ncores"] == 1 and calls[0]["nclust"] is None
    monkeypatch.setattr(harmonypy, "run_harmony", fake(x[:5]))
    with pytest.raises(MethodError, match=r"harmonypy returned corrected embeddings of shape \(5, 4\)"):
        pc.harmony_embeddings(x, np.arange(30) % 2, theta=2, sigma=0.1, n_clusters=0, max_iter=2, seed=0)


def test_joint_correction_errors_name_what_to_do():
    with pytest.raises(MethodError, match="batch_key 'lab' is not valid; use one of plate, source"):
        pc.ComBat("lab")
    p = _profiles(n_batches=1)
    with pytest.raises(MethodError, match="ComBat needs at least 2 batches"):
        pc.ComBat("plate").fit(p)
    with pytest.raises(MethodError, match="Harmony is not fitted yet"):
        pc.Harmony().plate("p0", p.x[:0])
    combat = pc.ComBat("plate").fit(_profiles())
    with pytest.raises(MethodError, match="plate elsewhere was not part of ComBat's joint fit.*'transductive'"):
        combat.plate("elsewhere", p.x[:0])


def test_a_missing_library_is_an_install_hint():
    with pytest.raises(MethodError, match=r"Harmony needs harmonypy_nowhere .*pip install 'harmonypy_nowhere'"):
        pc.require("harmonypy_nowhere", "harmonypy_nowhere", "Harmony")


def test_offset_transfer_gives_fitted_images_their_own_offset():
    rng = np.random.default_rng(0)
    fitted, offsets = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    move = pc.offset_transfer(fitted, offsets, neighbours=5)
    np.testing.assert_allclose(move(fitted[[3, 7]]), fitted[[3, 7]] + offsets[[3, 7]], rtol=1e-5)
    assert move(fitted[:0]).shape == (0, 3)


# ----------------------------------------------------------------------------- profiles, classifier

def test_well_profiles_average_the_sites_of_each_known_well():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    p = Profiles(x, np.array(["a", "a", "a", "b", "b", "b"], dtype=object), np.full(6, "s", dtype=object),
                 np.full(6, "s_b", dtype=object), np.array(["A01", "A01", "A02", "A01", "A01", ""], dtype=object),
                 np.array([0, 0, 1, 0, 0, UNKNOWN]), np.zeros(6, bool))
    w = well_profiles(p)
    assert len(w) == 3 and list(w.plate) == ["a", "a", "b"] and list(w.well) == ["A01", "A02", "A01"]
    np.testing.assert_allclose(w.x, [[1, 2], [4, 5], [7, 8]])
    assert list(p.labelled) == [True] * 5 + [False]


def test_profiles_refuse_ragged_columns():
    with pytest.raises(ValueError, match="Profiles.plate has 1 rows, x has 2"):
        Profiles(np.zeros((2, 1)), np.array(["a"]), *(np.zeros(2),) * 5)


def test_classifier_picks_c_by_validation_loss_and_fills_missing_classes():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 3], 40)
    x = rng.normal(size=(80, 3)) + 2 * y[:, None]
    clf = ProfileClassifier.fit(x, y, x[::2], y[::2], [0.001, 10.0], seed=0)
    assert clf.C == 10.0 and clf.val_loss is not None
    probs = clf.probabilities(x[:5])
    assert probs.shape == (5, 8) and np.allclose(probs.sum(1), 1) and (probs[:, [1, 2, 4, 5, 6, 7]] == 0).all()
    with pytest.raises(MethodError, match="no labelled treated training images"):
        ProfileClassifier.fit(x[:0], y[:0], x[:0], y[:0], [1.0], seed=0)


@pytest.mark.parametrize("text", ["", "a,b", "1,-2", "0"])
def test_c_grid_must_be_positive_numbers(text):
    with pytest.raises(MethodError, match="is not a comma-separated list of positive numbers"):
        parse_grid(text)


# ----------------------------------------------------------------------------- embedding cache

def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 255, size=(n, 5, 4, 4), dtype=np.uint8)


def _embed(images):
    return images.reshape(len(images), -1)[:, :3].astype(np.float32)


def test_cache_embeds_a_set_once_and_reads_it_back_in_any_order(tmp_path):
    images = _images(10)
    cache = EmbeddingCache(tmp_path, {"featuriser": "f", "weights_sha256": "w"})
    first = cache.embed(images, _embed)
    assert cache.stats.images_embedded == 10 and cache.stats.files_written == 1
    again = EmbeddingCache(tmp_path, {"featuriser": "f", "weights_sha256": "w"})
    order = np.random.default_rng(1).permutation(10)
    np.testing.assert_array_equal(again.embed(images[order], lambda x: pytest.fail("embedded again")), first[order])
    assert again.stats.images_cached == 10 and again.stats.files_read == 1 and again.stats.bytes_read > 0
    other = EmbeddingCache(tmp_path, {"featuriser": "g", "weights_sha256": "w"})  # another featuriser: a miss
    other.embed(images, _embed)
    assert other.stats.images_embedded == 10 and len(list(tmp_path.glob("emb-*.npz"))) == 2
    assert set_digest(image_digests(images)) == set_digest(image_digests(images[order]))


def test_cache_drops_a_damaged_file_and_embeds_again(tmp_path, capsys):
    images = _images(6)
    cache = EmbeddingCache(tmp_path, {"featuriser": "f"})
    cache.embed(images, _embed)
    path = cache.path(image_digests(images))
    path.write_bytes(b"not a zip")
    again = EmbeddingCache(tmp_path, {"featuriser": "f"})
    np.testing.assert_array_equal(again.embed(images, _embed), _embed(images))
    assert "is unreadable" in capsys.readouterr().err and again.stats.images_embedded == 6
    with np.load(path) as data:  # rewritten whole
        assert json.loads(str(data["key"]))["featuriser"] == "f"


def test_cache_without_folder_or_key_writes_nothing(tmp_path):
    for cache in (EmbeddingCache(None, {"featuriser": "f"}), EmbeddingCache(tmp_path, None)):
        assert not cache.enabled
        cache.embed(_images(3), _embed)
        assert cache.stats.images_embedded == 3
    assert not list(tmp_path.iterdir())


def test_cache_that_cannot_write_says_why_and_still_returns_embeddings(tmp_path):
    cache = EmbeddingCache(tmp_path / "missing", {"featuriser": "f"})
    np.testing.assert_array_equal(cache.embed(_images(2), _embed), _embed(_images(2)))
    assert "FileNotFoundError" in cache.stats.not_saved


@pytest.mark.parametrize("make", [pc.PlateMAD, pc.PlateSphering], ids=["mad", "sphering"])
def test_a_feature_constant_on_an_unseen_plates_dmso_borrows_the_fitted_spread(make):
    p = _profiles(per_batch=80)
    correction = make().fit(p)
    rng = np.random.default_rng(5)
    controls = rng.normal(size=(50, 6))
    controls[:, 4] = 2.0
    treated = rng.normal(size=(7, 6))
    out = correction.plate("unseen", controls)(treated)
    assert out.shape == (7, 6) and np.isfinite(out).all()
    expected = (treated[:, 4] - 2.0) / (correction.reference_spread_[4] * (1.4826 if make is pc.PlateMAD else 1.0))
    np.testing.assert_allclose(out[:, 4], expected, rtol=1e-5)
    alone = make().plate("unseen", controls[:, [0, 1, 2, 3, 5]])(treated[:, [0, 1, 2, 3, 5]])
    np.testing.assert_allclose(out[:, [0, 1, 2, 3, 5]], alone, rtol=1e-5, atol=1e-6)  # the rest: the plate's own


def test_cache_assembles_a_new_subset_of_known_images_without_embedding_them(tmp_path):
    images = _images(8)
    cache = EmbeddingCache(tmp_path, {"featuriser": "f"})
    full = cache.embed(images, _embed)
    part = cache.embed(images[[5, 1, 2]], lambda x: pytest.fail("embedded again"))
    np.testing.assert_array_equal(part, full[[5, 1, 2]])
    mixed = cache.embed(np.concatenate([images[:2], _images(2, seed=9)]), _embed)  # two known, two new
    np.testing.assert_array_equal(mixed[:2], full[:2])
    assert cache.stats.images_embedded == 10 and cache.stats.images_cached == 5 and cache.stats.files_written == 3


def test_an_image_digest_is_the_truncated_sha256_of_its_bytes():
    images = _images(3)
    expected = [hashlib.sha256(image.tobytes()).digest()[:16] for image in images]
    assert [bytes(d) for d in image_digests(images)] == expected
    assert [bytes(d) for d in image_digests(np.asfortranarray(images))] == expected  # whatever the memory layout


def test_cache_drops_a_file_that_holds_other_images_than_its_name_says(tmp_path, capsys):
    images, others = _images(4), _images(4, seed=3)
    cache = EmbeddingCache(tmp_path, {"featuriser": "f"})
    cache.embed(others, _embed)
    cache.path(image_digests(others)).rename(cache.path(image_digests(images)))  # others' file under images' name
    again = EmbeddingCache(tmp_path, {"featuriser": "f"})
    np.testing.assert_array_equal(again.embed(images, _embed), _embed(images))
    assert "holds other images" in capsys.readouterr().err and again.stats.images_embedded == 4
