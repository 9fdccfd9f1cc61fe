output "name" {
  description = "GPU node pool name."
  value       = google_container_node_pool.gpu.name
}

output "accelerator_type" {
  description = "Accelerator type (node label cloud.google.com/gke-accelerator has this value)."
  value       = var.accelerator_type
}

output "accelerator_count" {
  description = "GPUs per node."
  value       = var.accelerator_count
}

output "max_nodes" {
  description = "Maximum GPU nodes per zone."
  value       = var.max_nodes
}

output "node_selector" {
  description = "Node selector that targets this pool."
  value = {
    "cloud.google.com/gke-accelerator" = var.accelerator_type
    "cityscale.io/pool"                = "gpu"
  }
}

output "toleration" {
  description = "Toleration matching the pool taint."
  value = {
    key      = var.taint_key
    operator = "Exists"
    effect   = "NoSchedule"
  }
}
