variable "cluster_name" {
  description = "Cluster name: part of the role names."
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (aws_iam_openid_connect_provider / EKS module output)."
  type        = string
}

variable "oidc_provider_url" {
  description = "Issuer URL of the cluster's OIDC provider, with or without https:// (e.g. oidc.eks.us-east-1.amazonaws.com/id/ABC)."
  type        = string
}

variable "bucket_name" {
  description = "The shared model bucket."
  type        = string
}

variable "prefix" {
  description = "Key prefix this cluster reads and refresh writes (its root is the pods' HF_HOME). Empty = the whole bucket."
  type        = string
  default     = ""
  validation {
    # IAM reads * and ? in a resource ARN or StringLike value as wildcards and $ as a policy variable: a prefix
    # holding one would grant more than the prefix. Also no empty, "." or ".." segment.
    condition = (
      can(regex("^[A-Za-z0-9!_.'()-]+(/[A-Za-z0-9!_.'()-]+)*$", trim(var.prefix, "/")))
      && !contains(split("/", trim(var.prefix, "/")), ".") && !contains(split("/", trim(var.prefix, "/")), "..")
    ) || trim(var.prefix, "/") == ""
    error_message = "prefix must be S3 key segments of letters, digits and !_.'()- joined by /, no wildcard (* ?), $, space, empty, . or .. segment: e.g. clusters/gpu-a."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the hf-cache workloads (must match the manifests)."
  type        = string
  default     = "hf-cache"
}

variable "mount_service_account" {
  description = "ServiceAccount of the mount DaemonSet: trusted by the read-only role."
  type        = string
  default     = "hf-cache-mount"
}

variable "refresh_service_account" {
  description = "ServiceAccount of the refresh CronJob: trusted by the read/write role."
  type        = string
  default     = "hf-cache-refresh"
}

variable "kms_key_arn" {
  description = "The bucket's KMS key, when it uses SSE-KMS: the roles get decrypt (and refresh encrypt) on it."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for the roles."
  type        = map(string)
  default     = {}
}
