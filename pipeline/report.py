"""``beamcap report RUN_DIR``: one static HTML page for a caption run.

Per image: a thumbnail, the caption, its score and log-probability, and the N-best list; then
the failures with their stage and reason, and the run's summary counts (and metrics.json, when
``beamcap evaluate`` wrote one). Thumbnails are embedded, so the page can be mailed or archived.

    beamcap report out/runs/RUN_ID                      # writes out/runs/RUN_ID/report.html
    beamcap report gs://B/captions/runs/RUN_ID --images ./local-copy --output report.html
"""

from __future__ import annotations

import base64
import html
import io
import json
import posixpath
import sys

from apache_beam.io.filesystems import FileSystems
from PIL import Image

from models import storage
from pipeline.runs import read_run
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
"""


def thumbnail(uri: str, images_root: str | None) -> str | None:
    """A data: URI of a small JPEG, or None when the image cannot be read."""
    source = FileSystems.join(images_root, posixpath.basename(uri)) if images_root else uri
    try:
        with FileSystems.open(source) as handle, Image.open(io.BytesIO(handle.read())) as image:
            image.draft("RGB", (THUMBNAIL, THUMBNAIL))
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - a missing preview must not stop the report
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def render(run_dir: str, images_root: str | None = None) -> str:
    captions, failures, summary = read_run(run_dir)
    metrics_uri = FileSystems.join(run_dir, "metrics.json")
    metrics = json.loads(storage.read_text(metrics_uri)) if FileSystems.exists(metrics_uri) else {}
    esc = html.escape
    counts = summary["counts"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>beamcap run {esc(summary['run_id'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>beamcap run {esc(summary['run_id'])}</h1>",
        "<table id='summary'>",
        f"<tr><th>model</th><td>{esc(summary['model_id'])}</td></tr>",
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
        f"<h2>Captions ({captions.num_rows})</h2>",
    ]
    for row in sorted(captions.to_pylist(), key=lambda r: r["image_uri"]):
        src = thumbnail(row["image_uri"], images_root)
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
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    output = args.output or FileSystems.join(args.run_dir, "report.html")
    storage.write_text(output, render(args.run_dir, args.images))
    print(f"report written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
