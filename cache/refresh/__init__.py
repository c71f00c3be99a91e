"""The writer: models.txt -> plan -> publish to S3."""
