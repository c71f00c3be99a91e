# Offline: the real AWS provider, never called (plan only, no data source that reaches AWS), dummy credentials.
provider "aws" {
  region                      = "us-east-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}

variables {
  region            = "us-east-1"
  cluster_name      = "gpu-a"
  oidc_provider_arn = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC123"
  oidc_provider_url = "https://oidc.eks.us-east-1.amazonaws.com/id/ABC123"
  bucket_name       = "acme-hf-models"
  create_bucket     = true
}

run "mount_role_cannot_write" {
  command = plan
  assert {
    condition = alltrue([
      for s in jsondecode(module.cluster.mount_policy_json).Statement :
      alltrue([for a in flatten([s.Action]) : contains(["s3:GetObject", "s3:ListBucket", "kms:Decrypt"], a)])
    ])
    error_message = "the mount role may only read and list"
  }
  assert {
    condition = alltrue(flatten([
      for s in jsondecode(module.cluster.mount_policy_json).Statement :
      [for a in flatten([s.Action]) : length(regexall("Put|Delete|Abort|Create|\\*", a)) == 0]
    ]))
    error_message = "the mount role has a write action or a wildcard action"
  }
}

run "roles_are_scoped_to_the_bucket_prefix" {
  command = plan
  assert {
    condition = alltrue(flatten([
      for doc in [module.cluster.mount_policy_json, module.cluster.refresh_policy_json] : [
        for s in jsondecode(doc).Statement : [
          for r in flatten([s.Resource]) :
          contains(["arn:aws:s3:::acme-hf-models", "arn:aws:s3:::acme-hf-models/clusters/gpu-a/*"], r)
        ]
      ]
    ]))
    error_message = "a role reaches beyond the bucket's clusters/gpu-a/ prefix"
  }
  assert {
    condition = alltrue([
      for doc in [module.cluster.mount_policy_json, module.cluster.refresh_policy_json] :
      one([for s in jsondecode(doc).Statement : s.Condition.StringLike["s3:prefix"] if s.Sid == "ListPrefix"])
      == ["clusters/gpu-a/", "clusters/gpu-a/*"]
    ])
    error_message = "ListBucket is not limited to the prefix"
  }
  assert {
    # Without the trailing slash, "clusters/gpu-a" would also list the key names of clusters/gpu-a2/...
    condition = alltrue(flatten([
      for doc in [module.cluster.mount_policy_json, module.cluster.refresh_policy_json] : [
        for s in jsondecode(doc).Statement : [
          for v in flatten([try(s.Condition.StringLike["s3:prefix"], [])]) : startswith(v, "clusters/gpu-a/")
        ]
      ]
    ]))
    error_message = "an s3:prefix condition value does not end the prefix with /: it also lists clusters/gpu-a2/..."
  }
  assert {
    condition = toset(flatten([
      for s in jsondecode(module.cluster.refresh_policy_json).Statement : flatten([s.Action])
      if contains(flatten([s.Resource]), "arn:aws:s3:::acme-hf-models/clusters/gpu-a/*")
      ])) == toset([
      "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
    ])
    error_message = "the refresh role's object actions are not exactly read/write/abort/list-parts"
  }
  assert {
    condition = [
      for s in jsondecode(module.cluster.refresh_policy_json).Statement : flatten([s.Resource])
      if contains(flatten([s.Action]), "s3:ListBucketMultipartUploads")
    ] == [["arn:aws:s3:::acme-hf-models"]]
    error_message = "the refresh role cannot list the bucket's multipart uploads (it aborts stale ones at start)"
  }
  assert {
    condition     = !strcontains(module.cluster.mount_policy_json, "Multipart")
    error_message = "the read-only mount role must not see multipart uploads"
  }
  assert {
    condition     = output.prefix == "clusters/gpu-a"
    error_message = "the default prefix is clusters/<cluster_name>"
  }
}

run "trust_is_exactly_the_two_service_accounts" {
  command = plan
  assert {
    condition = jsondecode(module.cluster.trust_policy_json["mount"]).Statement[0].Condition.StringEquals == {
      "oidc.eks.us-east-1.amazonaws.com/id/ABC123:sub" = "system:serviceaccount:hf-cache:hf-cache-mount"
      "oidc.eks.us-east-1.amazonaws.com/id/ABC123:aud" = "sts.amazonaws.com"
    }
    error_message = "the mount role trusts something other than hf-cache/hf-cache-mount with aud sts.amazonaws.com"
  }
  assert {
    condition = jsondecode(module.cluster.trust_policy_json["refresh"]).Statement[0].Condition.StringEquals == {
      "oidc.eks.us-east-1.amazonaws.com/id/ABC123:sub" = "system:serviceaccount:hf-cache:hf-cache-refresh"
      "oidc.eks.us-east-1.amazonaws.com/id/ABC123:aud" = "sts.amazonaws.com"
    }
    error_message = "the refresh role trusts something other than hf-cache/hf-cache-refresh"
  }
  assert {
    condition = alltrue([
      for k, doc in module.cluster.trust_policy_json :
      jsondecode(doc).Statement[0].Principal.Federated == var.oidc_provider_arn && length(jsondecode(doc).Statement) == 1
    ])
    error_message = "a role is trusted by more than the cluster's OIDC provider"
  }
}

run "bucket_is_encrypted_private_and_tls_only" {
  command = plan
  assert {
    condition     = module.bucket[0].sse_algorithm == "AES256"
    error_message = "the bucket is not encrypted by default"
  }
  assert {
    condition = alltrue([
      for k in ["block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"] :
      module.bucket[0].public_access_block[k]
    ])
    error_message = "public access is not fully blocked"
  }
  assert {
    condition     = jsondecode(module.bucket[0].tls_policy_json).Statement[0].Condition.Bool["aws:SecureTransport"] == "false"
    error_message = "the bucket policy does not deny non-TLS requests"
  }
}

run "kms_when_a_key_is_given" {
  command = plan
  variables {
    kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  }
  assert {
    condition     = module.bucket[0].sse_algorithm == "aws:kms"
    error_message = "a KMS key was given but the bucket does not use SSE-KMS"
  }
  assert {
    condition     = strcontains(module.cluster.mount_policy_json, "kms:Decrypt") && !strcontains(module.cluster.mount_policy_json, "GenerateDataKey")
    error_message = "the mount role must be able to decrypt, and only that"
  }
}

run "root_prefix_with_a_wildcard_is_refused" {
  command = plan
  variables {
    prefix = "clusters/*"
  }
  expect_failures = [var.prefix]
}

run "module_prefix_with_a_wildcard_is_refused" {
  command = plan
  module {
    source = "./modules/cluster"
  }
  variables {
    prefix = "clusters/gpu-?"
  }
  expect_failures = [var.prefix]
}

run "module_prefix_with_a_dotdot_segment_is_refused" {
  command = plan
  module {
    source = "./modules/cluster"
  }
  variables {
    prefix = "clusters/../other"
  }
  expect_failures = [var.prefix]
}

run "a_shared_prefix_with_slashes_is_accepted" {
  command = plan
  variables {
    prefix = "/shared/hf-cache_v1/"
  }
  assert {
    condition     = output.prefix == "shared/hf-cache_v1"
    error_message = "a valid prefix was not kept (slashes trimmed)"
  }
}
