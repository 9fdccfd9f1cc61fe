module "cityscale" {
  source = "../../modules/cityscale"

  project_id                   = var.project_id
  environment                  = "dev"
  region                       = var.region
  bucket_prefix                = coalesce(var.bucket_prefix, "${var.project_id}-cityscale-dev")
  master_authorized_networks   = var.master_authorized_networks
  release_channel              = var.release_channel
  system_machine_type          = var.system_machine_type
  system_max_nodes             = var.system_max_nodes
  gpu_node_locations           = var.gpu_node_locations
  gpu_accelerator_type         = var.gpu_accelerator_type
  gpu_accelerator_count        = var.gpu_accelerator_count
  gpu_machine_type             = var.gpu_machine_type
  gpu_min_nodes                = 0
  gpu_max_nodes                = var.gpu_max_nodes
  gpu_spot                     = var.gpu_spot
  security_group               = var.security_group
  deletion_protection          = var.deletion_protection
  force_destroy_buckets        = var.force_destroy_buckets
  pipeline_root_retention_days = var.pipeline_root_retention_days
  model_versions_kept          = var.model_versions_kept
}
