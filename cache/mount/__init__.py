"""The reader half: a supervised, read-only rclone VFS mount of the bucket on every node."""
