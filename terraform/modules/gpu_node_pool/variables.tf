variable "project_id" {
  description = "GCP project of the cluster."
  type        = string
}

variable "region" {
  description = "Cluster location (region)."
  type        = string
}

variable "cluster_name" {
  description = "Name of the GKE cluster (gke module output)."
  type        = string
}

variable "name" {
  description = "Node pool name."
  type        = string
  default     = "gpu"
}

variable "node_locations" {
  description = "Zones where the accelerator type is offered (check `gcloud compute accelerator-types list --filter=\"name=<type>\"`)."
  type        = list(string)
}

variable "accelerator_type" {
  description = "GPU type attached to each node, e.g. nvidia-l4, nvidia-tesla-t4, nvidia-tesla-a100, nvidia-a100-80gb, nvidia-h100-80gb."
  type        = string
  default     = "nvidia-l4"

  validation {
    condition = contains([
      "nvidia-tesla-t4", "nvidia-l4", "nvidia-tesla-v100", "nvidia-tesla-a100",
      "nvidia-a100-80gb", "nvidia-h100-80gb", "nvidia-h100-mega-80gb", "nvidia-h200-141gb",
    ], var.accelerator_type)
    error_message = "accelerator_type must be a GKE accelerator name such as nvidia-l4 or nvidia-tesla-a100."
  }
}

variable "accelerator_count" {
  description = "GPUs per node (the G in N nodes x G GPUs of a TrainJob)."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 2, 4, 8], var.accelerator_count)
    error_message = "accelerator_count must be 1, 2, 4 or 8."
  }
}

variable "machine_type" {
  description = "Machine type matching the accelerator (g2-standard-* for L4, n1-standard-* for T4/V100, a2-* for A100, a3-* for H100)."
  type        = string
  default     = "g2-standard-8"
}

variable "gpu_driver_version" {
  description = "GKE-managed NVIDIA driver installation: DEFAULT or LATEST. GKE also deploys the NVIDIA device plugin."
  type        = string
  default     = "LATEST"

  validation {
    condition     = contains(["DEFAULT", "LATEST"], var.gpu_driver_version)
    error_message = "gpu_driver_version must be DEFAULT or LATEST."
  }
}

variable "min_nodes" {
  description = "Minimum nodes per zone. 0 lets the autoscaler scale GPUs to zero when no TrainJob or GPU predictor runs."
  type        = number
  default     = 0
}

variable "max_nodes" {
  description = "Maximum nodes per zone (the N of a multi-node TrainJob must fit)."
  type        = number
  default     = 2
}

variable "spot" {
  description = "Use Spot VMs (cheaper, preemptible; training checkpoints to GCS and resumes)."
  type        = bool
  default     = false
}

variable "disk_size_gb" {
  description = "Boot disk size of GPU nodes (CUDA images are large)."
  type        = number
  default     = 200
}

variable "node_service_account" {
  description = "Email of the node service account (iam module)."
  type        = string
}

variable "taint_key" {
  description = "Taint key kept on GPU nodes; GKE adds the matching toleration to Pods requesting nvidia.com/gpu."
  type        = string
  default     = "nvidia.com/gpu"
}
