variable "region" {
  description = "AWS region of the bucket."
  type        = string
}

variable "cluster_name" {
  description = "The cluster this apply is for (terraform apply once per cluster, e.g. with a workspace each)."
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider."
  type        = string
}

variable "oidc_provider_url" {
  description = "Issuer URL of the cluster's OIDC provider."
  type        = string
}

variable "bucket_name" {
  description = "The shared model bucket."
  type        = string
}

variable "create_bucket" {
  description = "Create the bucket in this apply (true for the first cluster only; the others reference it by name)."
  type        = bool
  default     = false
}

variable "prefix" {
  description = "Key prefix for this cluster; null = clusters/<cluster_name>. Clusters that should share one copy set the same prefix."
  type        = string
  default     = null
  validation {
    # The same rule as modules/cluster's (checked there too): caught here, the error names this root variable.
    condition = var.prefix == null ? true : trim(var.prefix, "/") == "" || (
      can(regex("^[A-Za-z0-9!_.'()-]+(/[A-Za-z0-9!_.'()-]+)*$", trim(var.prefix, "/")))
      && !contains(split("/", trim(var.prefix, "/")), ".") && !contains(split("/", trim(var.prefix, "/")), "..")
    )
    error_message = "prefix must be S3 key segments of letters, digits and !_.'()- joined by /, no wildcard (* ?), $, space, empty, . or .. segment: e.g. clusters/gpu-a."
  }
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS (null = AES256)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for everything created."
  type        = map(string)
  default     = {}
}
