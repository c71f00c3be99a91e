# What `hf-cache render` reads (terraform output -json > clusters/NAME/terraform-output.json).

output "bucket" {
  description = "The shared model bucket."
  value       = var.bucket_name
}

output "region" {
  description = "The bucket's region."
  value       = var.region
}

output "prefix" {
  description = "This cluster's prefix in the bucket (its root is the pods' HF_HOME)."
  value       = module.cluster.prefix
}

output "mount_role_arn" {
  description = "Annotate ServiceAccount hf-cache/hf-cache-mount with this role."
  value       = module.cluster.mount_role_arn
}

output "refresh_role_arn" {
  description = "Annotate ServiceAccount hf-cache/hf-cache-refresh with this role."
  value       = module.cluster.refresh_role_arn
}
