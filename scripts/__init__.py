"""Command-line tools around a served model: call a Space, release the model and the Space, measure a running Space."""
