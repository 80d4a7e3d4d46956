"""Data apart from models: the synthetic dataset, public caption files, the feature TFRecord
contract and stable train / val / test splits."""
