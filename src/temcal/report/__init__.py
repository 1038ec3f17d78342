"""Reports: plots and tables of calibration results."""
