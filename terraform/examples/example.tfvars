region            = "us-east-1"
cluster_name      = "example"
oidc_provider_arn = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
oidc_provider_url = "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
bucket_name       = "acme-hf-models"
create_bucket     = true
tags              = { team = "ml-platform" }
