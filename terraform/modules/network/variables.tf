variable "project_id" {
  description = "GCP project that owns the network."
  type        = string
}

variable "region" {
  description = "Region of the subnet, the Cloud Router and Cloud NAT (same region as the GKE cluster)."
  type        = string
}

variable "name" {
  description = "Name prefix for the VPC, subnet, router and NAT (for example `cityscale-dev`)."
  type        = string
}

variable "subnet_cidr" {
  description = "Primary IPv4 range of the GKE node subnet."
  type        = string
  default     = "10.10.0.0/20"
}

variable "pods_cidr" {
  description = "Secondary range used for Pod IPs (VPC-native cluster)."
  type        = string
  default     = "10.20.0.0/14"
}

variable "services_cidr" {
  description = "Secondary range used for Service ClusterIPs."
  type        = string
  default     = "10.24.0.0/20"
}

variable "master_ipv4_cidr_block" {
  description = "Control-plane range of the private cluster; admission webhooks (KServe, Trainer, JobSet) must be reachable from it."
  type        = string
  default     = "172.16.0.0/28"
}

variable "webhook_ports" {
  description = "Node ports the GKE control plane must reach for admission webhooks beyond GKE's default 443/10250."
  type        = list(string)
  default     = ["8443", "9443", "15017"]
}
