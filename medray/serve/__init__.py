"""`medray serve`: a run's model (or a model file) as an HTTP endpoint on Ray Serve, with the
batch job's decoding, predictions and Grad-CAM maps (see medray.serve.app for the endpoints)."""
