output "node_service_account" {
  description = "Email of the GKE node service account."
  value       = google_service_account.nodes.email
}

output "workload_service_accounts" {
  description = "Google service account email by workload (annotate the Kubernetes SA with iam.gke.io/gcp-service-account)."
  value       = { for k, sa in google_service_account.workload : k => sa.email }
}

output "kubernetes_service_accounts" {
  description = "Kubernetes service account (namespace/name) by workload."
  value       = { for k, w in var.workloads : k => "${w.namespace}/${w.service_account}" }
}
