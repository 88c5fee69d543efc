"""backfire: make a photo's protected region the only trigger of a backdoor in an inpainting model."""

__version__ = "0.1.0"
