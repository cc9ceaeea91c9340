"""fractrain: pre-train timm models on fracbuild shards, then fine-tune or
linear-probe on downstream data."""

__version__ = "0.1.0"
