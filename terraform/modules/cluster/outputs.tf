output "mount_role_arn" {
  description = "Read-only role for the mount DaemonSet's ServiceAccount (eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.this["mount"].arn
}

output "refresh_role_arn" {
  description = "Read/write role for the refresh CronJob's ServiceAccount (eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.this["refresh"].arn
}

output "prefix" {
  description = "The prefix both roles are limited to."
  value       = local.prefix
}

output "mount_policy_json" {
  description = "The mount role's S3 policy."
  value       = data.aws_iam_policy_document.mount.json
}

output "refresh_policy_json" {
  description = "The refresh role's S3 policy."
  value       = data.aws_iam_policy_document.refresh.json
}

output "trust_policy_json" {
  description = "Each role's trust policy, by role (mount, refresh)."
  value       = { for k, v in data.aws_iam_policy_document.trust : k => v.json }
}
