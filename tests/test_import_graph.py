"""The import graph of models/, transforms/ and pipeline/ has no cycle (docs/architecture.md's
floors), imports inside functions included; tests/import_graph.py walks it."""

import textwrap

from tests.import_graph import cycles, graph, in_words


def test_models_transforms_and_pipeline_import_one_another_without_a_cycle():
    edges = graph()
    found = [in_words(cycle, edges) for cycle in cycles(edges)]
    assert not found, "import cycles:\n" + "\n".join(found)


def write(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_a_cycle_closed_by_an_import_inside_a_function_is_found_with_its_lines(tmp_path):
    write(
        tmp_path,
        {
            "models/__init__.py": "",
            "models/captioner/__init__.py": "",
            "models/captioner/engine.py": "from models.captioner import helpers\n",
            "models/captioner/helpers.py": "import os\n\nfrom . import arrays\n",
            "models/captioner/arrays.py": """\
                def load():
                    from models.captioner.engine import Engine
                """,
            "models/storage.py": "from models.captioner import arrays\n",
            "transforms/__init__.py": "import models.storage\n",
            "pipeline/__init__.py": "",
        },
    )
    edges = graph(tmp_path)
    assert edges["models.captioner.helpers"] == {"models.captioner.arrays": 3}
    assert edges["transforms"] == {"models.storage": 1}
    (cycle,) = cycles(edges)
    assert in_words(cycle, edges) == (
        "models.captioner.arrays -> models.captioner.engine (models.captioner.arrays:2) -> "
        "models.captioner.helpers (models.captioner.engine:1) -> "
        "models.captioner.arrays (models.captioner.helpers:3)"
    )


def test_imports_downwards_only_make_no_cycle(tmp_path):
    write(
        tmp_path,
        {
            "models/__init__.py": "from models import storage\n",
            "models/storage.py": "",
            "transforms/__init__.py": "",
            "transforms/gcs.py": "from models.storage import join\n",
            "pipeline/__init__.py": "",
            "pipeline/cli.py": "def main():\n    from transforms import gcs\n",
        },
    )
    edges = graph(tmp_path)
    assert edges["pipeline.cli"] == {"transforms.gcs": 2}
    assert cycles(edges) == []
