variable "project_id" {
  description = "GCP project of the buckets."
  type        = string
}

variable "location" {
  description = "Bucket location (a region, same as the cluster, for egress-free reads)."
  type        = string
}

variable "prefix" {
  description = "Globally unique bucket name prefix: buckets are <prefix>-raw, <prefix>-features, <prefix>-models, <prefix>-pipeline-root."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,40}[a-z0-9]$", var.prefix))
    error_message = "prefix must be 3-42 lowercase letters, digits or dashes."
  }
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete non-empty buckets (dev only)."
  type        = bool
  default     = false
}

variable "noncurrent_version_retention_days" {
  description = "Days a noncurrent (overwritten/deleted) object version is kept before deletion."
  type        = number
  default     = 30
}

variable "raw_nearline_after_days" {
  description = "Age in days after which raw Parquet partitions move to NEARLINE."
  type        = number
  default     = 90
}

variable "pipeline_root_retention_days" {
  description = "Age in days after which KFP intermediate artifacts under the pipeline root are deleted."
  type        = number
  default     = 30
}

variable "features_retention_days" {
  description = "Age in days after which materialised training sets are deleted (they can be recomputed)."
  type        = number
  default     = 180
}

variable "model_versions_kept" {
  description = "Noncurrent versions kept per model object (older ones are deleted; registry entries point at live objects)."
  type        = number
  default     = 5
}

variable "labels" {
  description = "Labels applied to every bucket."
  type        = map(string)
  default     = {}
}
