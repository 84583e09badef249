"""I/O helpers: files, images, input listing, checkpoints, subspace folders, pretrained weights, tables.

Imports ``models/`` and ``core/`` (for validation) only.
"""
