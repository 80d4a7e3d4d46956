"""The model itself: encoder, preprocessing, vocabulary, decoders, beam search, the bundle,
and the import of a published im2txt model into one."""
