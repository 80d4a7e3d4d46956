"""``beamcap import-im2txt``: a published im2txt (Show and Tell) model -> a verified bundle.

    beamcap import-im2txt --checkpoint model.ckpt-2000000 --vocab word_counts.txt --output M
    beamcap import-im2txt --graph show-and-tell.pb --vocab word_counts.txt --output M
    beamcap caption --input photos/ --model M --output out/captions && beamcap show out/captions

Reads a TF1 name-based checkpoint or a frozen inference GraphDef with im2txt's
``word_counts.txt`` and writes an ordinary bundle (checksums, fingerprints, manifest with the
source files' sha256 and global step, and im2txt's preprocessing, which the caption job then
applies: resize to 346x346, central 299x299 crop). Sizes come from the weights' shapes. See
``models.captioner.im2txt`` for the mapping. Exit 2 with one line when the files are not such
a model.
"""

from __future__ import annotations

import os
import re

from models import storage
from models.captioner.manifest import MANIFEST
from models.configs import SettingsError
from pipeline.settings import Parser

_CHECKPOINT_FILE = re.compile(r"\.(index|data-\d+-of-\d+)$")


def _checkpoint_prefix(path: str) -> str:
    """Accepts the prefix or one of its files (``model.ckpt-2000000.index``)."""
    prefix = _CHECKPOINT_FILE.sub("", path)
    if not storage.is_gcs(prefix) and not os.path.exists(prefix + ".index"):
        raise SettingsError(
            f"--checkpoint: no {prefix}.index; give a TF1 checkpoint's prefix "
            "(e.g. model.ckpt-2000000)"
        )
    return prefix


def main(argv: list[str]) -> int:
    parser = Parser("beamcap import-im2txt", __doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint", help="TF1 checkpoint prefix (PREFIX.index, PREFIX.data-*), local or gs://"
    )
    source.add_argument("--graph", help="frozen inference GraphDef (.pb), local or gs://")
    parser.add_argument("--vocab", required=True, help="im2txt's word_counts.txt")
    parser.add_argument(
        "--output", required=True, help="bundle directory to write (local or gs://); must be new"
    )
    args = parser.parse_args(argv)
    prefix = _checkpoint_prefix(args.checkpoint) if args.checkpoint else None
    for flag, path in (("--graph", args.graph), ("--vocab", args.vocab)):
        if path and not storage.is_gcs(path) and not os.path.isfile(path):
            raise SettingsError(f"{flag}: {path} is not a file")
    if storage.exists(storage.join(args.output, MANIFEST)):
        raise SettingsError(f"--output: {args.output} already holds a bundle")
    from models.backend import load_keras

    load_keras()
    from models.captioner.im2txt import import_im2txt, read_checkpoint, read_graph

    model = read_checkpoint(prefix) if prefix else read_graph(args.graph)
    manifest = import_im2txt(model, args.vocab, args.output)
    decoder, source = manifest.decoder.config, manifest.source
    vocab = source.vocabulary
    step = f", global step {source.global_step}" if source.global_step is not None else ""
    print(
        f"wrote {args.output}: model {manifest.model_id} from {source.kind} "
        f"{', '.join(source.files)}{step}"
    )
    print(
        f"  InceptionV3 299px (im2txt preprocessing), embedding {decoder['embedding_dim']}, "
        f"LSTM {decoder['lstm_units']}, {vocab['words']} words"
        + (" (<UNK> appended)" if vocab["unk_appended"] else "")
        + (f", {vocab['unused_ids']} unused logit ids" if vocab["unused_ids"] else "")
    )
    return 0
