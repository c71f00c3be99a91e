"""The node-local tier: a standard Hugging Face cache on the node's disk in front of the rclone mount."""
