import pkgutil
import subprocess
import sys

import models


def test_every_models_module_imports_without_apache_beam():
    names = [m.name for m in pkgutil.walk_packages(models.__path__, "models.")]
    assert "models.training.trainer" in names  # the walk reaches subpackages
    code = (
        "import importlib, sys; sys.modules['apache_beam'] = None\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "assert 'apache_beam' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
