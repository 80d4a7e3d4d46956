"""Pure Keras 3 / numpy model code: encoder, vocabulary, decoder, beam search, bundle.

Nothing here imports Apache Beam.
"""
