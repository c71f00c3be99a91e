"""The reader side: what a job pod needs to use the mount (environment, warm-up, diagnosis, demo)."""
