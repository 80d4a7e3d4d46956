"""beamcap's presets (``--config NAME`` -> NAME.yaml here), installed as the package
``beamcap_presets`` so that any install finds them (pipeline/settings.py)."""
