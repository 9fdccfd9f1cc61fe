variable "project_id" {
  description = "GCP project id (must exist, with billing enabled)."
  type        = string
}

variable "environment" {
  description = "Environment name: dev or prod."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be dev or prod."
  }
}

variable "region" {
  description = "Region of the cluster, buckets and registry."
  type        = string
}

variable "bucket_prefix" {
  description = "Globally unique bucket prefix: <prefix>-raw, <prefix>-features, <prefix>-models, <prefix>-pipeline-root."
  type        = string
}

variable "master_authorized_networks" {
  description = "CIDRs allowed to reach the GKE control plane."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
}

variable "release_channel" {
  description = "GKE release channel (RAPID, REGULAR, STABLE)."
  type        = string
  default     = "REGULAR"
}

variable "system_machine_type" {
  description = "Machine type of the CPU system pool."
  type        = string
  default     = "e2-standard-8"
}

variable "system_max_nodes" {
  description = "Maximum system nodes per zone."
  type        = number
  default     = 3
}

variable "system_node_locations" {
  description = "Zones of the system pool (empty: GKE default zones of the region)."
  type        = list(string)
  default     = []
}

variable "gpu_node_locations" {
  description = "Zones of the GPU pool; the accelerator must be offered there."
  type        = list(string)
}

variable "gpu_accelerator_type" {
  description = "GPU type, e.g. nvidia-l4 (default), nvidia-tesla-t4, nvidia-tesla-a100, nvidia-h100-80gb."
  type        = string
  default     = "nvidia-l4"
}

variable "gpu_accelerator_count" {
  description = "GPUs per GPU node."
  type        = number
  default     = 1
}

variable "gpu_machine_type" {
  description = "Machine type of GPU nodes (must match the accelerator family)."
  type        = string
  default     = "g2-standard-8"
}

variable "gpu_min_nodes" {
  description = "Minimum GPU nodes per zone (0 = scale to zero)."
  type        = number
  default     = 0
}

variable "gpu_max_nodes" {
  description = "Maximum GPU nodes per zone."
  type        = number
  default     = 2
}

variable "gpu_spot" {
  description = "Use Spot VMs for the GPU pool."
  type        = bool
  default     = false
}

variable "security_group" {
  description = "Google Groups for RBAC security group (gke-security-groups@<domain>); empty to disable."
  type        = string
  default     = ""
}

variable "deletion_protection" {
  description = "Protect the cluster from deletion."
  type        = bool
  default     = true
}

variable "force_destroy_buckets" {
  description = "Allow destroying non-empty buckets (dev only)."
  type        = bool
  default     = false
}

variable "pipeline_root_retention_days" {
  description = "Days KFP intermediate artifacts are kept."
  type        = number
  default     = 30
}

variable "model_versions_kept" {
  description = "Noncurrent versions kept per model object."
  type        = number
  default     = 5
}

variable "namespace" {
  description = "Kubernetes namespace of CityScale workloads (KFP standalone, TrainJobs, InferenceServices, Feast)."
  type        = string
  default     = "cityscale"
}

variable "master_ipv4_cidr_block" {
  description = "/28 range of the private control plane."
  type        = string
  default     = "172.16.0.0/28"
}
