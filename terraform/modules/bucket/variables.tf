variable "name" {
  description = "Name of the shared model bucket (created once, used by every cluster under its own prefix)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS. Null keeps SSE-S3 (AES256), which needs no key policy for the IRSA roles."
  type        = string
  default     = null
}

variable "versioning" {
  description = "Bucket versioning. Off by default: every refresh of a changed model would keep the old multi-GB files as noncurrent versions, doubling storage, and refresh already publishes immutable snapshots."
  type        = bool
  default     = false
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which incomplete multipart uploads (a killed refresh) are aborted and their parts deleted."
  type        = number
  default     = 3
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a non-empty bucket."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for the bucket."
  type        = map(string)
  default     = {}
}
