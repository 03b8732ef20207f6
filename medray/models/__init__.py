"""Backbones by name, the classifier built on them, and safe model files."""
