"""fracbuild: build minimal synthetic pre-training data sets (1p-frac and kin)
into byte-reproducible WebDataset shards with a JSON manifest."""

__version__ = "0.1.0"
