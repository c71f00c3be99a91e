# terraform apply per cluster: the IRSA roles for this cluster, and (once, with create_bucket) the shared bucket.

locals {
  prefix = coalesce(var.prefix, "clusters/${var.cluster_name}")
  tags   = merge({ "app.kubernetes.io/part-of" = "hf-cache" }, var.tags)
}

module "bucket" {
  source      = "./modules/bucket"
  count       = var.create_bucket ? 1 : 0
  name        = var.bucket_name
  kms_key_arn = var.kms_key_arn
  tags        = local.tags
}

module "cluster" {
  source            = "./modules/cluster"
  cluster_name      = var.cluster_name
  oidc_provider_arn = var.oidc_provider_arn
  oidc_provider_url = var.oidc_provider_url
  bucket_name       = var.bucket_name # known at plan time; the bucket (when created here) has this name
  prefix            = local.prefix
  kms_key_arn       = var.kms_key_arn
  tags              = local.tags
}
