"""The model layer, pure Keras 3 / numpy; nothing here imports Apache Beam. One package per role:

- ``captioner``: the model itself: encoder backbones and preprocessings, vocabulary, decoders,
  beam search, the bundle that holds them, and the im2txt import;
- ``datasets``: data apart from models: the synthetic dataset, public caption files, the feature
  TFRecord contract and stable splits;
- ``training``: ``train()`` in two phases, its inputs, callbacks and learning curve;
- ``evaluation``: caption metrics (BLEU, ROUGE-L, CIDEr-D) and attribute accuracy against a
  synthetic scene.

Shared by all four: ``configs`` (plain settings), ``storage`` (bytes, local or gs://),
``backend`` (loading Keras quietly) and ``faults`` (a run fault, without Keras).
"""

from models.backend import set_tensorflow_log_level

set_tensorflow_log_level()  # before anything imports TensorFlow: its C++ start-up chatter
