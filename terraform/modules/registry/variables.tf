variable "project_id" {
  description = "GCP project of the repository."
  type        = string
}

variable "location" {
  description = "Artifact Registry location (region of the cluster)."
  type        = string
}

variable "repository_id" {
  description = "Docker repository id; images are <location>-docker.pkg.dev/<project>/<repository_id>/<image>:<git sha>."
  type        = string
  default     = "cityscale"
}

variable "keep_recent_versions" {
  description = "Most recent image versions kept per image by the cleanup policy (rollback window)."
  type        = number
  default     = 30
}

variable "untagged_retention" {
  description = "Age after which untagged image versions are deleted (duration string, e.g. 604800s)."
  type        = string
  default     = "604800s"
}

variable "labels" {
  description = "Labels applied to the repository."
  type        = map(string)
  default     = {}
}
