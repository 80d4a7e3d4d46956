"""A training run's record: the per-epoch history, the learning-curve plot and the headline."""

from __future__ import annotations

import csv
from pathlib import Path


def headline(metrics: dict) -> dict:
    """The figures of a training run that its bundle's manifest records and ``beamcap train``
    prints."""
    keys = ("phase", "epochs_run", "best_epoch", "train_loss", "val_loss", "val_bleu4")
    keys += ("seconds", "images_seen", "captions_seen")
    return {key: metrics[key] for key in keys if key in metrics}


def read_history(path: Path) -> list[dict]:
    """Per-epoch rows of the CSV log, the last row of each epoch kept (a resumed run may
    repeat the epoch it was interrupted in)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = {int(row["epoch"]): row for row in csv.DictReader(handle)}
    return [
        {key: (int(v) if key == "epoch" else float(v)) for key, v in rows[e].items()}
        for e in sorted(rows)
    ]


def plot_curve(
    history: list[dict], path: Path, *, scores_title: str = "validation captions (beam search)"
) -> None:
    """Loss per epoch; with a second panel (``scores_title``), the validation scores (BLEU-4
    and every ``val_*_accuracy``) against the images (phase 2, pretraining) or captions
    (phase 1) trained on: the learning curve."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    seen_key = next(
        (k for k in ("images_seen", "captions_seen") if history and k in history[0]), None
    )
    panels = 2 if seen_key else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    epochs = [row["epoch"] + 1 for row in history]
    axis = axes[0][0]
    axis.plot(epochs, [row["loss"] for row in history], marker="o", label="train")
    if history and "val_loss" in history[0]:
        axis.plot(epochs, [row["val_loss"] for row in history], marker="o", label="validation")
    axis.set(xlabel="epoch", ylabel="masked cross-entropy", title="beamcap training loss")
    axis.legend()
    if seen_key:
        axis = axes[0][1]
        seen = [row[seen_key] for row in history]
        scores = [k for k in history[0] if k.startswith("val_") and k.endswith("_accuracy")]
        for key in [*scores, "val_bleu4"]:
            if key in history[0]:
                label = "BLEU-4" if key == "val_bleu4" else key[4:].replace("_", " ")
                axis.plot(seen, [row[key] for row in history], marker="o", label=label)
        axis.set(
            xlabel=seen_key.replace("_", " "),
            ylabel="validation sample",
            ylim=(0, 1),
            title=scores_title,
        )
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
