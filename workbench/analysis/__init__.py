"""Framework-free analyses of traces (numpy/pandas)."""
