"""The tiny model lives in the package (``hf-cache demo`` uses it too); tests import it from here."""

from hf_cache.readers.tinymodel import make_tiny_gpt2

__all__ = ["make_tiny_gpt2"]
