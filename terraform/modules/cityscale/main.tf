# One CityScale environment: APIs, network, private GKE cluster with a CPU system pool and an
# autoscaling GPU pool, storage zones, Artifact Registry and Workload Identity service accounts.

locals {
  name       = "cityscale-${var.environment}"
  short_name = "cs-${var.environment}"
  labels = {
    app         = "cityscale"
    environment = var.environment
    managed-by  = "terraform"
  }

  apis = [
    "artifactregistry.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "storage.googleapis.com",
    "binaryauthorization.googleapis.com",
  ]
}

resource "google_project_service" "apis" {
  for_each = toset(local.apis)

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

module "network" {
  source = "../network"

  project_id = var.project_id
  region     = var.region
  name       = local.name

  master_ipv4_cidr_block = var.master_ipv4_cidr_block

  depends_on = [google_project_service.apis]
}

module "buckets" {
  source = "../buckets"

  project_id                   = var.project_id
  location                     = var.region
  prefix                       = var.bucket_prefix
  force_destroy                = var.force_destroy_buckets
  pipeline_root_retention_days = var.pipeline_root_retention_days
  model_versions_kept          = var.model_versions_kept
  labels                       = local.labels

  depends_on = [google_project_service.apis]
}

module "registry" {
  source = "../registry"

  project_id    = var.project_id
  location      = var.region
  repository_id = "cityscale"
  labels        = local.labels

  depends_on = [google_project_service.apis]
}

module "iam" {
  source = "../iam"

  project_id             = var.project_id
  name                   = local.short_name
  bucket_names           = module.buckets.names
  registry_location      = var.region
  registry_repository_id = module.registry.repository_id

  depends_on = [google_project_service.apis]
}

module "gke" {
  source = "../gke"

  project_id                 = var.project_id
  region                     = var.region
  name                       = local.name
  node_locations             = var.system_node_locations
  network_id                 = module.network.network_id
  subnet_id                  = module.network.subnet_id
  pods_range_name            = module.network.pods_range_name
  services_range_name        = module.network.services_range_name
  master_authorized_networks = var.master_authorized_networks
  master_ipv4_cidr_block     = var.master_ipv4_cidr_block
  release_channel            = var.release_channel
  node_service_account       = module.iam.node_service_account
  system_machine_type        = var.system_machine_type
  system_max_nodes           = var.system_max_nodes
  security_group             = var.security_group
  deletion_protection        = var.deletion_protection
  labels                     = local.labels
}

module "gpu_pool" {
  source = "../gpu_node_pool"

  project_id           = var.project_id
  region               = var.region
  cluster_name         = module.gke.cluster_name
  node_locations       = var.gpu_node_locations
  accelerator_type     = var.gpu_accelerator_type
  accelerator_count    = var.gpu_accelerator_count
  machine_type         = var.gpu_machine_type
  min_nodes            = var.gpu_min_nodes
  max_nodes            = var.gpu_max_nodes
  spot                 = var.gpu_spot
  node_service_account = module.iam.node_service_account
}
