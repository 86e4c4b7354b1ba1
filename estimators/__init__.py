"""Shipped latency estimators (gzipped JSON with LightGBM text models), installed as ``nasctl.estimators``."""
