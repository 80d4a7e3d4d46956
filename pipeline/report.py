"""``beamcap report RUN_DIR``: one static HTML page for a caption run.

Per image: a thumbnail, the caption, its score and log-probability, and the N-best list; then
the failures with their stage and reason, and the run's summary counts (and metrics.json, when
``beamcap evaluate`` wrote one). Thumbnails are embedded, so the page can be mailed or archived.

The encoder that made the captions (the summary's ``encoder`` section, or the manifest of
``--model``) heads the page; when its weights are ``random:SEED`` and were never trained (not
phase 2), a warning says that the captions cannot describe the images and how to get real ones.
With ``--model``, the bundle's training history follows: its loss and learning-curve plot
(validation accuracy against images seen) and the table of its epochs.

    beamcap report out/runs/RUN_ID                      # writes out/runs/RUN_ID/report.html
    beamcap report out/runs/RUN_ID --model data/model   # + encoder and training history
    beamcap report gs://B/captions/runs/RUN_ID --images ./local-copy --output report.html
"""

from __future__ import annotations

import base64
import html
import io
import json
import posixpath
import sys

from PIL import Image

from models import storage
from models.captioner.manifest import Manifest
from models.evaluation.attributes import ACCURACY_KEYS
from pipeline.output_root import METRICS, REPORT, RunDir
from pipeline.settings import Parser

THUMBNAIL = 160
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } table { border-collapse: collapse; }
td, th { padding: 4px 10px; text-align: left; vertical-align: top; border-bottom: 1px solid #ddd; }
.image { display: flex; gap: 1em; margin: 1em 0; padding-bottom: 1em;
         border-bottom: 1px solid #eee; }
.image img { width: 160px; height: 120px; object-fit: contain; background: #f4f4f4; }
.caption { font-size: 1.1em; font-weight: 600; } .score { color: #666; font-size: 0.9em; }
.nbest { margin: 0.4em 0 0 1.2em; color: #444; } .uri { color: #888; font-size: 0.8em; }
.failure td { color: #a00; }
.attributes { font-size: 0.9em; margin-top: 0.2em; } .attributes.right { color: #070; }
.attributes.wrong { color: #a00; }
.warning { border: 2px solid #c60; background: #fff4e5; padding: 0.8em 1em; margin: 1em 0;
           font-size: 1.05em; } .warning strong { color: #a40; }
.history td, .history th { font-size: 0.9em; }
"""

RANDOM_ENCODER_WARNING = (
    "The encoder is randomly initialised (weights {weights}) and was never trained, so its "
    "features do not describe the images and these captions cannot either: the decoder learned "
    "the captions' grammar, not the scenes. For real captions use --encoder-weights imagenet on "
    "a connected machine, pretrain the encoder on labelled images (`beamcap pretrain`, as "
    "`make demo` and `make quality` do), or train it with the decoder (phase 2: `beamcap train "
    "--init-from BUNDLE --train-encoder` on features written --with-images)."
)


def encoder_warning(encoder: dict | None) -> str | None:
    """The warning for captions from an untrained random encoder; None otherwise (or when the
    encoder is unknown: runs and bundles written before the summary named it)."""
    if not encoder:
        return None
    weights = str(encoder.get("weights", ""))
    if weights.startswith("random:") and encoder.get("phase", 1) != 2:
        return RANDOM_ENCODER_WARNING.format(weights=weights)
    return None


def describe_encoder(encoder: dict) -> str:
    """One line: architecture, size, weights, and phase 2's fine-tuning when there was one."""
    text = (
        f"{encoder.get('architecture', '?')} {encoder.get('image_size', '?')}px, weights "
        f"{encoder.get('weights', '?')}, fingerprint {str(encoder.get('fingerprint', '?'))[:12]}"
    )
    if encoder.get("pretraining"):
        text += "; " + describe_pretraining(encoder["pretraining"])
    tuning = encoder.get("fine_tuning")
    if encoder.get("phase") == 2 and tuning:
        text += (
            f"; fine-tuned with the decoder (phase 2): {tuning.get('images_seen')} images, "
            f"learning rate {tuning.get('learning_rate')}, BatchNorm {tuning.get('batchnorm')}"
        )
    elif encoder.get("phase") == 2:
        text += "; fine-tuned with the decoder (phase 2)"
    return text


def describe_pretraining(pretraining: dict) -> str:
    """One line of ``beamcap pretrain``'s provenance: data, images seen, held-out accuracy."""
    dataset = pretraining.get("dataset", {})
    accuracy = ", ".join(
        f"{head} {value:.2f}" for head, value in pretraining.get("held_out_accuracy", {}).items()
    )
    stages = " -> ".join(
        f"{stage['layer']} {stage['images_seen']}" for stage in pretraining.get("stages") or ()
    )
    return (
        f"pretrained on {dataset.get('data', '?')} ({dataset.get('kind', '?')}, "
        f"{dataset.get('train_images', '?')} images): "
        + (f"stages {stages} -> whole encoder " if stages else "")
        + f"{pretraining.get('images_seen')} seen, "
        f"kept after {pretraining.get('kept_after_images', '?')}, held-out accuracy "
        f"{accuracy or 'not measured'}"
    )


def attribute_line(verdict: dict) -> str:
    """An image's attribute scores (``beamcap evaluate``'s ``per_image``) as one HTML line."""
    scene = "describes the scene" if verdict["describes"] else "does not describe the scene"
    parts = [
        f"{field} {hits[0]}/{hits[1]}" for field, hits in verdict.items() if field != "describes"
    ]
    mark = "right" if verdict["describes"] else "wrong"
    return f"<div class='attributes {mark}'>{scene} · {' · '.join(parts)}</div>"


def _image_data_uri(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def training_section(model_uri: str) -> list[str]:
    """The bundle's loss / learning-curve plot and its per-epoch history, as HTML parts."""
    esc = html.escape
    parts = [f"<h2>Training of {esc(model_uri)}</h2>"]
    plot = storage.join(model_uri, "loss.png")
    if storage.exists(plot):
        parts.append(
            f"<img id='learning-curve' alt='loss and learning curve' "
            f"src='{_image_data_uri(storage.read_bytes(plot))}'>"
        )
    metrics_uri = storage.join(model_uri, "metrics.json")
    if not storage.exists(metrics_uri):
        return parts
    history = json.loads(storage.read_text(metrics_uri)).get("history", [])
    columns = [
        key
        for key in (
            "images_seen",
            "captions_seen",
            "minutes",
            "loss",
            "val_loss",
            "val_bleu4",
            *(f"val_{key}" for key in ACCURACY_KEYS),
        )
        if history and key in history[0]
    ]
    parts.append("<table class='history'><tr><th>epoch</th>")
    parts += [f"<th>{esc(c.replace('_', ' '))}</th>" for c in columns]
    parts.append("</tr>")
    for row in history:
        cells = "".join(
            f"<td>{row[c]:.0f}</td>" if c.endswith("_seen") else f"<td>{row[c]:.4g}</td>"
            for c in columns
        )
        parts.append(f"<tr><td>{int(row['epoch']) + 1}</td>{cells}</tr>")
    parts.append("</table>")
    return parts


def thumbnail(uri: str, images_root: str | None) -> str | None:
    """A data: URI of a small JPEG, or None when the image cannot be read."""
    source = storage.join(images_root, posixpath.basename(uri)) if images_root else uri
    try:
        with Image.open(io.BytesIO(storage.read_bytes(source))) as image:
            image.draft("RGB", (THUMBNAIL, THUMBNAIL))
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a missing preview must not stop the report
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


# Over 60 lines: one HTML page, built section by section in the page's own order.
def render(run_dir: str, images_root: str | None = None, *, model_uri: str | None = None) -> str:
    captions, failures, summary = RunDir(run_dir).read()
    encoder = summary.get("encoder")
    if encoder is None and model_uri:
        encoder = Manifest.read(model_uri).encoder.to_json()
    warning = encoder_warning(encoder)
    metrics_uri = RunDir(run_dir).file(METRICS)
    metrics = json.loads(storage.read_text(metrics_uri)) if storage.exists(metrics_uri) else {}
    esc = html.escape
    counts = summary["counts"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>beamcap run {esc(summary['run_id'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>beamcap run {esc(summary['run_id'])}</h1>",
        *(
            [
                "<div class='warning' id='encoder-warning'><strong>Warning:</strong> "
                f"{esc(warning)}</div>"
            ]
            if warning
            else []
        ),
        "<table id='summary'>",
        f"<tr><th>model</th><td>{esc(summary['model_id'])}</td></tr>",
        *(
            [f"<tr><th>encoder</th><td>{esc(describe_encoder(encoder))}</td></tr>"]
            if encoder
            else []
        ),
        f"<tr><th>matched</th><td>{counts['matched']}</td></tr>",
        f"<tr><th>captioned</th><td>{counts['captioned']}</td></tr>",
        *(
            f"<tr><th>failed at {esc(stage)}</th><td>{n}</td></tr>"
            for stage, n in counts["failed"].items()
        ),
        f"<tr><th>wall time</th><td>{summary['wall_seconds']} s "
        f"({summary['images_per_second']} images/s)</td></tr>",
        *(
            f"<tr><th>{esc(key)}</th><td>{value:.4f}</td></tr>"
            for key, value in metrics.items()
            if isinstance(value, float) and key not in ("images_per_second",)
        ),
        "</table>",
        *(training_section(model_uri) if model_uri else []),
        f"<h2>Captions ({captions.num_rows})</h2>",
    ]
    per_image = metrics.get("per_image", {})
    for row in sorted(captions.to_pylist(), key=lambda r: r["image_uri"]):
        src = thumbnail(row["image_uri"], images_root)
        verdict = per_image.get(posixpath.basename(row["image_uri"]))
        image = f"<img src='{src}' alt=''>" if src else "<img alt='no preview'>"
        nbest = "".join(
            f"<li>{esc(c['caption'])} <span class='score'>score {c['score']:.3f}</span></li>"
            for c in row["candidates"]
        )
        parts.append(
            f"<div class='image'>{image}<div>"
            f"<div class='caption'>{esc(row['caption'])}</div>"
            f"<div class='score'>score {row['score']:.3f} · log-prob {row['log_prob']:.3f} · "
            f"{row['width']}x{row['height']}</div>"
            f"{attribute_line(verdict) if verdict else ''}"
            f"<ol class='nbest'>{nbest}</ol>"
            f"<div class='uri'>{esc(row['image_uri'])}</div></div></div>"
        )
    parts.append(f"<h2>Failures ({failures.num_rows})</h2><table id='failures'>")
    parts.append("<tr><th>image</th><th>stage</th><th>error</th><th>message</th></tr>")
    for row in sorted(failures.to_pylist(), key=lambda r: r["image_uri"]):
        parts.append(
            f"<tr class='failure'><td>{esc(row['image_uri'])}</td><td>{esc(row['stage'])}</td>"
            f"<td>{esc(row['error_type'])}</td><td>{esc(row['message'][:300])}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = Parser("beamcap report", __doc__)
    parser.add_argument("run_dir", help="a committed run directory (OUTPUT/runs/RUN_ID)")
    parser.add_argument(
        "--images",
        default=None,
        help="read thumbnails from ROOT/<file name> instead of each image_uri "
        "(e.g. a local copy of a bucket)",
    )
    parser.add_argument(
        "--output", default=None, help="HTML file to write (default: RUN_DIR/report.html)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="the run's model bundle: names its encoder when the run's summary does not, and "
        "adds its training history (loss, learning curve, epochs)",
    )
    args = parser.parse_args(argv)
    output = args.output or RunDir(args.run_dir).file(REPORT)
    storage.write_text(output, render(args.run_dir, args.images, model_uri=args.model))
    print(f"report written to {output}")
    return 0


if __name__ == "__main__":
    from pipeline.cli import main as beamcap

    sys.exit(beamcap(["report", *sys.argv[1:]]))
