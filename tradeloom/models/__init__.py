"""Direction models' core: workflow config, labels, folds, metrics, calibration, the promotion gate and the
feature-spec compatibility check. Pure numpy + pydantic; training and I/O live in pipelines and adapters."""
