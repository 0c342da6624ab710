"""Framework-free analyses of traces and specs (numpy/pandas)."""
