"""The model from the Hugging Face Hub, pinned to a commit, with a checksum of every cached file."""
