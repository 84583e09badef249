"""The paper's math and models' use: pure functions and frozen configs, no file I/O (imports models/ only)."""
