import subprocess
import sys


def test_models_import_without_apache_beam():
    code = (
        "import sys; sys.modules['apache_beam'] = None\n"
        "import models.beam_search, models.bundle, models.decoder, models.encoder, "
        "models.storage, models.vocabulary\n"
        "assert 'apache_beam' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
