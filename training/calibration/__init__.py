"""Fitted on validation data after training: temperature, abstention, feature check and scale reference."""
