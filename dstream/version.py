"""The dstream version (also in setup.cfg), written into checkpoints."""
__version__ = "0.1.0"
