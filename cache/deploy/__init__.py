"""Per-cluster deployment: render a cluster overlay from its values and Terraform outputs."""
