"""The batch inversion job (``launch.invert``): ``job.run`` / ``job.main``; see ``job.py``."""
