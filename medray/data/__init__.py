"""Data: find datasets on disk, decode and preprocess them as Ray Datasets, make demo data."""
