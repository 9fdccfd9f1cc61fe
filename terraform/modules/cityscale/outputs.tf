output "cluster_name" {
  description = "GKE cluster name."
  value       = module.gke.cluster_name
}

output "cluster_location" {
  description = "GKE cluster location."
  value       = module.gke.cluster_location
}

output "registry" {
  description = "REGISTRY for `make images`: the images <registry>/cityscale:<git sha> and <registry>/cityscale-serving:<git sha>."
  value       = module.registry.registry
}

output "buckets" {
  description = "Bucket names by zone."
  value       = module.buckets.names
}

output "workload_service_accounts" {
  description = "Google service account emails by workload."
  value       = module.iam.workload_service_accounts
}

# Consumed by helmfile.d (environment values): `make infra-apply` writes it to
# build/terraform/<env>.helmfile-values.json. Keys must match helmfile.d/environments/*.yaml usage.
output "helmfile_values" {
  description = "Values for helmfile.d: project, region, cluster, registry, buckets, Workload Identity emails, GPU pool."
  value = {
    gcp = {
      projectId = var.project_id
      region    = var.region
    }
    cluster = {
      name     = module.gke.cluster_name
      location = module.gke.cluster_location
    }
    registry  = module.registry.registry
    namespace = var.namespace
    buckets = {
      raw          = module.buckets.names["raw"]
      features     = module.buckets.names["features"]
      models       = module.buckets.names["models"]
      pipelineRoot = module.buckets.names["pipeline-root"]
    }
    workloadIdentity = {
      pipelines = module.iam.workload_service_accounts["pipelines"]
      trainer   = module.iam.workload_service_accounts["trainer"]
      serving   = module.iam.workload_service_accounts["serving"]
      feast     = module.iam.workload_service_accounts["feast"]
      airbyte   = module.iam.workload_service_accounts["airbyte"]
    }
    gpu = {
      acceleratorType  = module.gpu_pool.accelerator_type
      acceleratorCount = module.gpu_pool.accelerator_count
      maxNodesPerZone  = module.gpu_pool.max_nodes
      zones            = var.gpu_node_locations
    }
  }
}

# Consumed by the pipeline configuration (`make compile` / `make deploy`): written to
# build/terraform/<env>.pipeline-config.json by `make infra-apply`.
output "pipeline_config" {
  description = "Storage URIs, image registry, namespace, service accounts and GPU scheduling for the KFP pipelines."
  value = {
    project_id        = var.project_id
    region            = var.region
    namespace         = var.namespace
    registry          = module.registry.registry
    pipeline_root     = "gs://${module.buckets.names["pipeline-root"]}"
    raw_uri           = "gs://${module.buckets.names["raw"]}"
    features_uri      = "gs://${module.buckets.names["features"]}"
    models_uri        = "gs://${module.buckets.names["models"]}"
    trainer_runtime   = "torch-distributed"
    trainer_sa        = "cityscale-trainer"
    serving_sa        = "cityscale-serving"
    model_name        = "cityscale"
    gpu_node_selector = module.gpu_pool.node_selector
    gpu_toleration    = module.gpu_pool.toleration
    gpus_per_node     = module.gpu_pool.accelerator_count
    max_gpu_nodes     = module.gpu_pool.max_nodes * length(var.gpu_node_locations)
  }
}
