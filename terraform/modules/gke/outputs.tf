output "cluster_name" {
  description = "GKE cluster name (for `gcloud container clusters get-credentials`)."
  value       = google_container_cluster.this.name
}

output "cluster_location" {
  description = "Cluster location (region)."
  value       = google_container_cluster.this.location
}

output "cluster_id" {
  description = "Cluster id."
  value       = google_container_cluster.this.id
}

output "endpoint" {
  description = "Control plane endpoint."
  value       = google_container_cluster.this.endpoint
  sensitive   = true
}

output "workload_pool" {
  description = "Workload Identity pool (<project>.svc.id.goog)."
  value       = "${var.project_id}.svc.id.goog"
}

output "system_pool_name" {
  description = "Name of the CPU system node pool."
  value       = google_container_node_pool.system.name
}
