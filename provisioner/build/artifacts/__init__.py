"""Artifact writers, one module per format."""
