"""The jobs: loops with checkpoints, preemption, progress and manifests around the library (imports every
room below: models, core, io, evaluation)."""
