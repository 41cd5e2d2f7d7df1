"""Hostile model files and inputs, each built here and run through the real CLI."""
