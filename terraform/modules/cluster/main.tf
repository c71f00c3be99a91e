# Per-cluster IRSA roles: read-only for the mount DaemonSet, read/write for the refresh CronJob, both limited to
# the cluster's prefix in the shared bucket and trusted by exactly one ServiceAccount each.

locals {
  oidc_host   = trimprefix(var.oidc_provider_url, "https://")
  prefix      = trim(var.prefix, "/")
  bucket_arn  = "arn:aws:s3:::${var.bucket_name}"
  objects_arn = local.prefix == "" ? "${local.bucket_arn}/*" : "${local.bucket_arn}/${local.prefix}/*"
  # With its trailing slash: "clusters/gpu-a" alone would also match a listing of "clusters/gpu-a2/...".
  list_prefix = local.prefix == "" ? ["*"] : ["${local.prefix}/", "${local.prefix}/*"]
  subjects = {
    mount   = "system:serviceaccount:${var.namespace}:${var.mount_service_account}"
    refresh = "system:serviceaccount:${var.namespace}:${var.refresh_service_account}"
  }
}

data "aws_iam_policy_document" "trust" {
  for_each = local.subjects
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = [each.value]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "mount" {
  statement {
    sid       = "ReadObjects"
    actions   = ["s3:GetObject"]
    resources = [local.objects_arn]
  }
  statement {
    sid       = "ListPrefix"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = local.list_prefix
    }
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "DecryptObjects"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

# Refresh reads what the mount reads (the same statements, one definition) and writes the prefix.
data "aws_iam_policy_document" "refresh" {
  source_policy_documents = [data.aws_iam_policy_document.mount.json]
  statement {
    sid = "WriteObjects"
    actions = [
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [local.objects_arn]
  }
  # Refresh aborts its own stale multipart uploads at start. S3 evaluates no s3:prefix condition for this action
  # (the Service Authorization Reference lists s3:prefix for ListBucket/ListBucketVersions only), so a prefix
  # condition here would deny every call: the role may list in-progress upload keys of the bucket, and aborting
  # stays limited to the prefix by the object-level AbortMultipartUpload above.
  statement {
    sid       = "ListUploads"
    actions   = ["s3:ListBucketMultipartUploads"]
    resources = [local.bucket_arn]
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "EncryptObjects"
      actions   = ["kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role" "this" {
  for_each             = local.subjects
  name                 = "hf-cache-${var.cluster_name}-${each.key}"
  description          = "hf-cache ${each.key} (${each.value}) on cluster ${var.cluster_name}"
  assume_role_policy   = data.aws_iam_policy_document.trust[each.key].json
  max_session_duration = 3600
  tags                 = var.tags
}

resource "aws_iam_role_policy" "mount" {
  name   = "s3-read"
  role   = aws_iam_role.this["mount"].id
  policy = data.aws_iam_policy_document.mount.json
}

resource "aws_iam_role_policy" "refresh" {
  name   = "s3-read-write"
  role   = aws_iam_role.this["refresh"].id
  policy = data.aws_iam_policy_document.refresh.json
}
