output "network_id" {
  description = "Self link / id of the VPC."
  value       = google_compute_network.vpc.id
}

output "network_name" {
  description = "Name of the VPC."
  value       = google_compute_network.vpc.name
}

output "subnet_id" {
  description = "Id of the GKE node subnet."
  value       = google_compute_subnetwork.gke.id
}

output "subnet_name" {
  description = "Name of the GKE node subnet."
  value       = google_compute_subnetwork.gke.name
}

output "pods_range_name" {
  description = "Name of the secondary range for Pods."
  value       = "pods"
}

output "services_range_name" {
  description = "Name of the secondary range for Services."
  value       = "services"
}
