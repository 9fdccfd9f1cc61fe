output "cluster_name" {
  description = "GKE cluster name (gcloud container clusters get-credentials)."
  value       = module.cityscale.cluster_name
}

output "cluster_location" {
  description = "GKE cluster region."
  value       = module.cityscale.cluster_location
}

output "registry" {
  description = "REGISTRY for make images."
  value       = module.cityscale.registry
}

output "buckets" {
  description = "Bucket names by zone."
  value       = module.cityscale.buckets
}

output "helmfile_values" {
  description = "Environment values for helmfile.d (written to build/terraform/<env>.helmfile-values.json)."
  value       = module.cityscale.helmfile_values
}

output "pipeline_config" {
  description = "Pipeline configuration (written to build/terraform/<env>.pipeline-config.json)."
  value       = module.cityscale.pipeline_config
}
