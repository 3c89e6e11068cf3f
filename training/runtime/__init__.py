"""Where and how a training run executes: devices (``tf.distribute``), optional MLflow tracking, and the
code version every model folder records. Any step may use these."""
