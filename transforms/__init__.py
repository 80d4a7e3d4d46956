"""Beam PTransforms and DoFns, each a reusable stage of the jobs in ``pipeline``."""
