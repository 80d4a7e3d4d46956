import keras
import numpy as np
import pytest

from models.captioner.encoder import EncoderSpec, ImageEncoder, bucket_size, preprocess

SIZE = 75  # InceptionV3's minimum: keeps the suite fast


@pytest.fixture(scope="module")
def encoder():
    return ImageEncoder(EncoderSpec("random:1", SIZE), with_grid=True)


def images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def test_preprocessing_equals_keras_inception_preprocess_input():
    batch = images(2)
    batch[0, 0, 0] = [0, 128, 255]
    expected = keras.applications.inception_v3.preprocess_input(batch.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(preprocess(batch)), expected, atol=1e-6)


def test_compiled_encode_equals_eager_call(encoder):
    batch = images(3)
    compiled = encoder.encode(batch)
    eager = encoder.model(batch, training=False)
    np.testing.assert_allclose(
        compiled["pooled"], keras.ops.convert_to_numpy(eager["pooled"]), rtol=1e-4, atol=1e-5
    )
    assert compiled["pooled"].shape == (3, 2048)
    assert compiled["grid"].shape == (3, *encoder.grid_shape)
    assert np.ptp(compiled["pooled"], axis=0).max() > 0, "random features must differ by image"


def test_encoding_does_not_depend_on_batch_companions(encoder):
    batch = images(5, seed=3)
    together = encoder.encode(batch)["pooled"]
    alone = encoder.encode(batch[2:3])["pooled"]
    np.testing.assert_allclose(together[2], alone[0], rtol=1e-4, atol=1e-5)


def test_random_weights_are_reproducible_and_fingerprinted(encoder):
    again = ImageEncoder(EncoderSpec("random:1", SIZE))
    other = ImageEncoder(EncoderSpec("random:2", SIZE))
    assert again.fingerprint == encoder.fingerprint
    assert other.fingerprint != encoder.fingerprint
    np.testing.assert_array_equal(again.encode(images(2)), encoder.encode(images(2))["pooled"])


def test_fingerprint_changes_when_a_weight_changes():
    changed = ImageEncoder(EncoderSpec("random:1", SIZE))
    before = changed.fingerprint
    weights = changed.backbone.get_weights()
    weights[10] = weights[10] + 1e-3
    changed.backbone.set_weights(weights)
    from models.captioner.encoder import weights_fingerprint

    assert weights_fingerprint(changed.backbone) != before


def test_weights_from_a_file(tmp_path, encoder):
    path = str(tmp_path / "inception.weights.h5")
    encoder.save_weights(path)
    loaded = ImageEncoder(EncoderSpec(path, SIZE))
    assert loaded.fingerprint == encoder.fingerprint
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        ImageEncoder(EncoderSpec(str(tmp_path / "missing.weights.h5"), SIZE))


def test_imagenet_offline_names_the_alternatives(monkeypatch):
    def offline(**kwargs):
        if kwargs.get("weights") == "imagenet":
            raise OSError("Temporary failure in name resolution")
        return original(**kwargs)

    original = keras.applications.InceptionV3
    monkeypatch.setattr(keras.applications, "InceptionV3", offline)
    with pytest.raises(RuntimeError, match=r"random:SEED.*gs://"):
        ImageEncoder(EncoderSpec("imagenet", SIZE))


def test_bad_specs_and_inputs_are_refused(encoder):
    with pytest.raises(ValueError, match="at least 75"):
        EncoderSpec("random:0", 64)
    with pytest.raises(ValueError, match="integer seed"):
        ImageEncoder(EncoderSpec("random:x", SIZE))
    with pytest.raises(ValueError, match="uint8"):
        encoder.encode(images(1).astype("float32"))
    with pytest.raises(ValueError, match="shape"):
        encoder.encode(np.zeros((1, 80, 80, 3), np.uint8))


def test_bucket_sizes_are_powers_of_two():
    assert [bucket_size(n) for n in (1, 2, 3, 5, 64, 65)] == [1, 2, 4, 8, 64, 128]


def test_bf16_precision_keeps_weights_and_approximates_fp32(encoder):
    bf16 = ImageEncoder(EncoderSpec("random:1", SIZE), precision="bf16")
    assert bf16.fingerprint == encoder.fingerprint
    batch = images(4, seed=9)
    fast, exact = bf16.encode(batch), encoder.encode(batch)["pooled"]
    assert fast.dtype == np.float32
    cosine = (fast * exact).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(exact, axis=1)
    assert cosine.min() > 0.99
    with pytest.raises(ValueError, match="precision"):
        ImageEncoder(EncoderSpec("random:1", SIZE), precision="int8")


def test_fixed_batch_size_pads_short_batches_without_changing_results(encoder, monkeypatch):
    """The path GPUs and JAX take, here on a CPU (no any-batch graph): a short batch is padded
    with zeros to ``batch_size``, a longer one to a power of two, and the padding's rows are
    cut off again; the features are those of the images alone."""
    from models.captioner import encoder as module

    monkeypatch.setattr(module, "_any_batch_function", lambda model, size: None)
    padded = ImageEncoder(EncoderSpec("random:1", SIZE), batch_size=8)
    fed = []
    predict = padded.model.predict_on_batch
    monkeypatch.setattr(padded.model, "predict_on_batch", lambda b: fed.append(b) or predict(b))
    for count in (3, 9):
        batch = images(count, seed=2)
        np.testing.assert_allclose(
            padded.encode(batch), encoder.encode(batch)["pooled"], rtol=1e-4, atol=1e-5
        )
    assert [len(batch) for batch in fed] == [8, 16]
    np.testing.assert_array_equal(fed[0][:3], images(3, seed=2))
    assert not fed[0][3:].any() and not fed[1][9:].any()


def test_on_a_cpu_every_batch_size_runs_one_trace_at_its_own_size():
    """No padding and no retrace mid-run: a short last batch costs in proportion to its rows."""
    encoder = ImageEncoder(EncoderSpec("random:1", SIZE), batch_size=8)
    single = [encoder.encode(images(1, seed=seed)) for seed in (3, 4, 5)]
    together = encoder.encode(np.concatenate([images(1, seed=seed) for seed in (3, 4, 5)]))
    np.testing.assert_allclose(np.concatenate(single), together, rtol=1e-4, atol=1e-5)
    encoder.encode(images(7, seed=6))
    assert encoder._any_batch.experimental_get_tracing_count() == 1


def test_random_weights_refuse_a_weight_they_do_not_know():
    from models.captioner.encoder import _random_weights

    known = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 1)])
    assert [w.shape for w in _random_weights(known, 0)] == [(1, 1, 2, 3), (3,)]
    separable = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.SeparableConv2D(3, 1)])
    with pytest.raises(ValueError, match=r"cannot initialise .*'depthwise_kernel' weight"):
        _random_weights(separable, 0)


def test_an_unknown_architecture_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown encoder architecture 'ResNet50'; known: Incep"):
        EncoderSpec("random:0", 299, architecture="ResNet50")
