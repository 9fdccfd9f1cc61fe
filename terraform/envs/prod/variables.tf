variable "project_id" {
  description = "GCP project id of the prod environment (TF_VAR_project_id or -var project_id=$GCP_PROJECT)."
  type        = string
}

variable "region" {
  description = "Region of cluster, buckets and registry. Pick one that offers the GPU type in gpu_node_locations."
  type        = string
  default     = "us-central1"
}

variable "bucket_prefix" {
  description = "Bucket name prefix; empty means <project_id>-cityscale-prod."
  type        = string
  default     = ""
}

variable "master_authorized_networks" {
  description = "CIDRs allowed to reach the control plane (set in terraform.tfvars; never 0.0.0.0/0)."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
}

variable "release_channel" {
  description = "GKE release channel."
  type        = string
  default     = "STABLE"
}

variable "system_machine_type" {
  description = "Machine type of the CPU system pool."
  type        = string
  default     = "e2-standard-8"
}

variable "system_max_nodes" {
  description = "Maximum system nodes per zone."
  type        = number
  default     = 4
}

variable "gpu_node_locations" {
  description = "Zones of the GPU pool (must offer gpu_accelerator_type)."
  type        = list(string)
  default     = ["us-central1-a", "us-central1-b"]
}

variable "gpu_accelerator_type" {
  description = "GPU type of the GPU pool."
  type        = string
  default     = "nvidia-l4"
}

variable "gpu_accelerator_count" {
  description = "GPUs per GPU node."
  type        = number
  default     = 1
}

variable "gpu_machine_type" {
  description = "Machine type of GPU nodes (g2-standard-* for L4)."
  type        = string
  default     = "g2-standard-8"
}

variable "gpu_max_nodes" {
  description = "Maximum GPU nodes per zone (minimum is always 0: scale to zero)."
  type        = number
  default     = 4
}

variable "gpu_spot" {
  description = "Use Spot VMs for GPU nodes."
  type        = bool
  default     = false
}

variable "security_group" {
  description = "Google Groups for RBAC security group; empty disables it."
  type        = string
  default     = ""
}

variable "deletion_protection" {
  description = "Protect the cluster from deletion."
  type        = bool
  default     = true
}

variable "force_destroy_buckets" {
  description = "Allow destroying non-empty buckets."
  type        = bool
  default     = false
}

variable "pipeline_root_retention_days" {
  description = "Days KFP intermediate artifacts are kept."
  type        = number
  default     = 60
}

variable "model_versions_kept" {
  description = "Noncurrent versions kept per model object."
  type        = number
  default     = 10
}
