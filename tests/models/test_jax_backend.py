"""The model layer on Keras' JAX backend gives what it gives on TensorFlow (a subprocess, since
the backend is chosen when Keras is first imported)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax", reason="the test extra installs jax")

from models.captioner.bundle import load_bundle  # noqa: E402
from tests.conftest import SEARCH, TINY_SIZE  # noqa: E402

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np
    from models.captioner.bundle import load_bundle
    assert keras.backend.backend() == "jax"
    bundle = load_bundle(sys.argv[1])
    images = np.load(sys.argv[2])
    features = bundle.encoder.encode(images)
    captions = bundle.caption(images, **json.loads(sys.argv[3]))
    print(json.dumps({
        "fingerprint": bundle.encoder.fingerprint,
        "features": features.tolist(),
        "captions": [[[list(h.tokens), h.log_prob] for h in image] for image in captions],
    }))
    """
)


def test_bundle_captions_alike_on_jax(tmp_path, parts):
    from models.captioner.bundle import save_bundle

    save_bundle(str(tmp_path / "bundle"), **parts)
    images = np.random.default_rng(5).integers(0, 256, (2, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
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
    np.testing.assert_allclose(
        on_jax["features"], bundle.encoder.encode(images), rtol=1e-3, atol=1e-4
    )
    on_tf = bundle.caption(images, **SEARCH)
    for jax_image, tf_image in zip(on_jax["captions"], on_tf, strict=True):
        assert [tokens for tokens, _ in jax_image] == [list(h.tokens) for h in tf_image]
        np.testing.assert_allclose(
            [lp for _, lp in jax_image], [h.log_prob for h in tf_image], atol=1e-3
        )
