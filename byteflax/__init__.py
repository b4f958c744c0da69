"""byteflax: token-free, byte-level sequence models small enough for a phone."""

__version__ = "0.1.0"
