"""ml_collections config files (``get_config(arg)``) of the launch scripts."""
