"""Where and how a training run executes: devices (``tf.distribute``) and optional MLflow tracking."""
