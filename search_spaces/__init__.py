"""Shipped search spaces (YAML) and their schema's README.md, installed as ``nasctl.search_spaces``."""
