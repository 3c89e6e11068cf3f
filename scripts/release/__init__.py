"""Publish: push the model to the Hub, deploy the Space pinned to it, pick the Space's examples."""
