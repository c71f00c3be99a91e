"""hf-cache: one shared S3 copy of Hugging Face models, served to every node through a read-through cache."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hf-cache")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
