import datetime
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from models.datasets.caption_files import read_caption_file
from models.datasets.synthetic import read_scenes
from models.evaluation.attributes import (
    ACCURACY_KEYS,
    attribute_hits,
    attribute_scores,
    describes,
)
from models.evaluation.metrics import caption_scores
from pipeline import evaluate, report
from pipeline.output_root import RunDir


def copy_run(run_dir: Path, root: Path, run_id: str | None = None) -> Path:
    """A copy of ``run_dir`` as ROOT/runs/RUN_ID: evaluate and report write beside the run they
    read, and the session's ``caption_run`` is shared."""
    copy = root / "runs" / (run_id or run_dir.name)
    shutil.copytree(run_dir, copy)
    return copy


def test_evaluate_scores_the_run_against_its_references(caption_run, tmp_path, capsys):
    run_dir, references, scenes, _ = caption_run
    run_dir = copy_run(run_dir, tmp_path)
    assert (
        evaluate.main(
            ["--captions", str(run_dir), "--references", str(references), "--scenes", str(scenes)]
        )
        == 0
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    captions, _, _ = RunDir(str(run_dir)).read()
    rows = {
        uri.rsplit("/", 1)[1]: c
        for uri, c in zip(
            captions.column("image_uri").to_pylist(),
            captions.column("caption").to_pylist(),
            strict=True,
        )
    }
    assert metrics["images_captioned"] == 7  # 6 good images and the mis-named JPEG
    assert metrics["images_scored"] == 6 and metrics["images_without_references"] == 1
    refs = {}
    for line in references.read_text().splitlines()[1:]:
        name, text = line.split(",", 1)
        refs.setdefault(name, []).append(text.strip('"'))
    names = sorted(refs)
    expected = caption_scores([rows[n] for n in names], [refs[n] for n in names])
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value)
    assert metrics["images_with_scenes"] == 6
    truth = {scene.image: scene for scene in read_scenes(str(scenes))}
    judged = attribute_scores([(truth[n], rows[n]) for n in names])
    assert {key: metrics[key] for key in ACCURACY_KEYS} == pytest.approx(judged)
    assert metrics["per_image"] == {  # each image's parts: what the report shows beside it
        n: {
            "describes": describes(truth[n], rows[n]),
            **{f: [sum(v), len(v)] for f, v in attribute_hits(truth[n], rows[n]).items()},
        }
        for n in names
    }
    out = capsys.readouterr().out
    assert "cider_d" in out and "attribute_accuracy" in out


def test_evaluate_an_output_root_scores_the_latest_captions(caption_run, tmp_path):
    """An earlier committed run captioned the same images with their references' words (it
    would score far higher): the latest run's captions are the ones scored."""
    run_dir, references, scenes, _ = caption_run
    latest = copy_run(run_dir, tmp_path)
    earlier = copy_run(run_dir, tmp_path, "20000101T000000Z-earlier")
    first = dict(reversed(read_caption_file(str(references)).pairs))
    (shard,) = earlier.glob("captions-*.parquet")
    table = pq.read_table(shard)
    names = [uri.rsplit("/", 1)[1] for uri in table.column("image_uri").to_pylist()]
    changed = {
        "caption": [first.get(name, "a caption") for name in names],
        "run_id": [earlier.name] * len(names),
        "captioned_at": pc.subtract(table["captioned_at"], datetime.timedelta(days=1)),
    }
    for column, values in changed.items():
        index = table.schema.get_field_index(column)
        table = table.set_column(index, table.schema.field(index), pa.array(values))
    pq.write_table(table, shard)
    scored = evaluate.evaluate(str(tmp_path), str(references), str(scenes))
    assert scored["run_id"] == latest.name
    assert scored == evaluate.evaluate(str(latest), str(references), str(scenes))
    assert scored["bleu4"] < evaluate.evaluate(str(earlier), str(references))["bleu4"]


def chromium() -> str:
    """Debian's Chromium, which `make test` installs (`make browser`); else the test fails."""
    path = shutil.which("chromium")
    if not path:
        pytest.fail("Chromium is not installed: `make browser` installs it (root, apt-get)")
    return path


HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_report_renders_in_chromium(caption_run, tmp_path):
    run_dir, references, scenes, must_fail = caption_run
    run_dir = copy_run(run_dir, tmp_path)
    flags = ["--references", str(references), "--scenes", str(scenes)]
    assert evaluate.main(["--captions", str(run_dir), *flags]) == 0
    assert report.main([str(run_dir), "--output", str(tmp_path / "report.html")]) == 0
    browser = chromium()
    common = [browser, *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}"]
    url = f"file://{tmp_path / 'report.html'}"
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    captions, failures, summary = RunDir(str(run_dir)).read()
    for caption in captions.column("caption").to_pylist():
        assert caption in dom
    assert dom.count('class="failure"') == len(must_fail) == failures.num_rows
    for name in must_fail:
        assert name in dom
    assert dom.count("data:image/jpeg;base64,") == captions.num_rows  # every thumbnail shown
    assert f"<td>{summary['counts']['matched']}</td>" in dom
    truth = {scene.image: scene for scene in read_scenes(str(scenes))}
    judged = 0
    for row in captions.to_pylist():  # each scene's attribute scores beside its image
        scene = truth.get(Path(row["image_uri"]).name)
        if scene:
            verdict = evaluate.image_verdict(scene, row["caption"])
            line = report.attribute_line(verdict).replace("'", '"')
            block = dom[dom.index(row["image_uri"]) - 3000 : dom.index(row["image_uri"])]
            assert line in block and row["caption"] in block
            judged += 1
    assert judged == 6 and dom.count('class="attributes ') == judged

    shot = tmp_path / "report.png"
    subprocess.run(
        [*common, "--window-size=1000,1200", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1200, 1000)
    assert pixels.std() > 20, "the screenshot is blank"


def with_summary(run_dir, tmp_path, **changes):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, **changes}))
    return copy


RANDOM_ENCODER = {
    "architecture": "InceptionV3",
    "image_size": 75,
    "pooling": "avg",
    "weights": "random:0",
    "fingerprint": "ab" * 32,
}


def test_report_warns_when_the_encoder_is_random_and_untrained(caption_run, tmp_path):
    run_dir, *_ = caption_run
    page = report.render(str(with_summary(run_dir, tmp_path, encoder=RANDOM_ENCODER)))
    assert "id='encoder-warning'" in page
    assert page.index("encoder-warning") < page.index("id='summary'")  # heads the page
    assert "--encoder-weights imagenet" in page and "make quality" in page
    assert "InceptionV3 75px, weights random:0" in page


def test_report_does_not_warn_for_a_fine_tuned_or_pretrained_encoder(caption_run, tmp_path):
    run_dir, *_ = caption_run
    tuned = {**RANDOM_ENCODER, "phase": 2, "fine_tuning": {"images_seen": 1000}}
    page = report.render(str(with_summary(run_dir, tmp_path / "a", encoder=tuned)))
    assert "encoder-warning" not in page and "fine-tuned with the decoder (phase 2)" in page
    imagenet = {**RANDOM_ENCODER, "weights": "imagenet", "phase": 1}
    page = report.render(str(with_summary(run_dir, tmp_path / "b", encoder=imagenet)))
    assert "encoder-warning" not in page


def test_report_reads_the_encoder_from_the_model_when_the_summary_lacks_it(
    caption_run, tiny_bundle, tmp_path
):
    run_dir, *_ = caption_run
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("encoder", None)
    copy = with_summary(run_dir, tmp_path)
    (copy / "summary.json").write_text(json.dumps(summary))
    assert "encoder-warning" not in report.render(str(copy))  # unknown: no claim either way
    page = report.render(str(copy), model_uri=tiny_bundle)  # the tiny bundle: random, phase 1
    assert "id='encoder-warning'" in page and "Training of" in page
