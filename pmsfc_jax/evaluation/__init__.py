"""Evaluation: the paper's metrics (``metrics.py``, ``niqe.py``) and folder-against-folder evaluation
(``evaluate.py``). Imports models/, core/ and io/."""
