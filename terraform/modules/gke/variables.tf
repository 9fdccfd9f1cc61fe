variable "project_id" {
  description = "GCP project of the cluster."
  type        = string
}

variable "region" {
  description = "Region of the (regional) cluster control plane."
  type        = string
}

variable "name" {
  description = "Cluster name."
  type        = string
}

variable "node_locations" {
  description = "Zones for the system node pool (empty = GKE picks the region's default zones)."
  type        = list(string)
  default     = []
}

variable "network_id" {
  description = "VPC id from the network module."
  type        = string
}

variable "subnet_id" {
  description = "Subnet id from the network module."
  type        = string
}

variable "pods_range_name" {
  description = "Secondary range name for Pods."
  type        = string
}

variable "services_range_name" {
  description = "Secondary range name for Services."
  type        = string
}

variable "master_ipv4_cidr_block" {
  description = "/28 range for the private control plane endpoint peering."
  type        = string
  default     = "172.16.0.0/28"
}

variable "master_authorized_networks" {
  description = "CIDRs allowed to reach the control plane (operators' egress IPs, CI runners). Keep it short."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
}

variable "enable_private_endpoint" {
  description = "Expose only the private control-plane endpoint (requires a bastion / Connect Gateway to run make targets)."
  type        = bool
  default     = false
}

variable "release_channel" {
  description = "GKE release channel: RAPID, REGULAR or STABLE."
  type        = string
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "node_service_account" {
  description = "Email of the least-privilege node service account (iam module)."
  type        = string
}

variable "system_machine_type" {
  description = "Machine type of the CPU system pool (platform services, KFP, Feast, Redis, monitoring, CPU steps)."
  type        = string
  default     = "e2-standard-8"
}

variable "system_min_nodes" {
  description = "Minimum nodes per zone in the system pool."
  type        = number
  default     = 1
}

variable "system_max_nodes" {
  description = "Maximum nodes per zone in the system pool."
  type        = number
  default     = 3
}

variable "system_disk_size_gb" {
  description = "Boot disk size of system nodes."
  type        = number
  default     = 100
}

variable "security_group" {
  description = "Google Groups for RBAC group (gke-security-groups@<your-domain>). Empty disables the feature."
  type        = string
  default     = ""
}

variable "deletion_protection" {
  description = "Protect the cluster from `terraform destroy` (true in prod)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Resource labels applied to the cluster."
  type        = map(string)
  default     = {}
}
