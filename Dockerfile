# beamcap worker image: Apache Beam's Python SDK image (matching setup.py's Beam and Python)
# with GPU TensorFlow and beamcap installed. Use it as --sdk_container_image on Dataflow
# (Runner v2) or as the DOCKER environment on Flink; the flex-template stage adds the launcher.
#   make docker IMAGE=us-docker.pkg.dev/PROJECT/beamcap/worker:0.1.0
ARG BEAM_VERSION=2.77.0
ARG PYTHON_VERSION=3.11

FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:latest AS launcher

FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS worker
WORKDIR /opt/beamcap
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY setup.py constraints.txt README.md ./
COPY pipeline ./pipeline
COPY transforms ./transforms
COPY models ./models
COPY configs ./configs
# heif: HEIC photos (pillow-heif; its wheels bundle GPL-2.0 and LGPL-3.0 codecs: README)
RUN pip install --no-cache-dir -c constraints.txt ".[gpu,heif]"
# The launcher and the workers run the installed package (its presets included), from a folder
# that holds no copy of the source: the tree above is only what pip installed from.
WORKDIR /opt/beamcap-launcher
RUN printf '%s\n' 'import sys' 'from pipeline.cli import main' \
      'sys.exit(main(["caption", *sys.argv[1:]]))' > caption.py
# The SDK image's boot program stays the entrypoint: workers start as Beam expects.

FROM worker AS flex-template
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/beamcap-launcher/caption.py \
    FLEX_TEMPLATE_PYTHON_SETUP_FILE=/opt/beamcap/setup.py
ENTRYPOINT ["/opt/google/dataflow/python_template_launcher"]
