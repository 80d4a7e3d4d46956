"""The model layer on Keras' JAX backend gives what it gives on TensorFlow (a subprocess, since
the backend is chosen when Keras is first imported). On JAX the encoder pads every batch to a
power of two: 3 images run as 4, and the padding's row must not reach the results."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from models.captioner.bundle import load_bundle
from tests.conftest import SEARCH, TINY_SIZE

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np
    from models.captioner.bundle import load_bundle
    assert keras.backend.backend() == "jax"
    bundle = load_bundle(sys.argv[1])
    fed, predict = [], bundle.encoder.model.predict_on_batch
    bundle.encoder.model.predict_on_batch = lambda batch: fed.append(len(batch)) or predict(batch)
    images = np.load(sys.argv[2])
    features = bundle.encoder.encode(images)
    captions = bundle.caption(images, **json.loads(sys.argv[3]))
    print(json.dumps({
        "fingerprint": bundle.encoder.fingerprint,
        "fed": fed,
        "features": features.tolist(),
        "captions": [[[list(h.tokens), h.log_prob] for h in image] for image in captions],
    }))
    """
)


def test_bundle_captions_alike_on_jax(tmp_path, parts):
    from models.captioner.bundle import save_bundle

    save_bundle(str(tmp_path / "bundle"), **parts)
    images = np.random.default_rng(5).integers(0, 256, (3, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(tmp_path / "bundle"),
            str(tmp_path / "images.npy"),
            json.dumps(SEARCH),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    on_jax = json.loads(result.stdout.strip().splitlines()[-1])

    bundle = load_bundle(str(tmp_path / "bundle"))
    assert on_jax["fingerprint"] == bundle.encoder.fingerprint
    assert on_jax["fed"] == [4, 4]  # encode, then caption's encode: padded
    np.testing.assert_allclose(
        on_jax["features"], bundle.encoder.encode(images), rtol=1e-3, atol=1e-4
    )
    on_tf = bundle.caption(images, **SEARCH)
    for jax_image, tf_image in zip(on_jax["captions"], on_tf, strict=True):
        assert [tokens for tokens, _ in jax_image] == [list(h.tokens) for h in tf_image]
        np.testing.assert_allclose(
            [lp for _, lp in jax_image], [h.log_prob for h in tf_image], atol=1e-3
        )
