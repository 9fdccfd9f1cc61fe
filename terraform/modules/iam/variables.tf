variable "project_id" {
  description = "GCP project of the service accounts."
  type        = string
}

variable "name" {
  description = "Short name used as service-account id prefix (<= 15 chars, e.g. cs-dev)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.name))
    error_message = "name must be 2-15 lowercase letters, digits or dashes and start with a letter."
  }
}

variable "bucket_names" {
  description = "Bucket names by zone (raw, features, models, pipeline-root) from the buckets module."
  type        = map(string)
}

variable "registry_location" {
  description = "Artifact Registry location."
  type        = string
}

variable "registry_repository_id" {
  description = "Artifact Registry repository id the nodes may pull from."
  type        = string
}

variable "workloads" {
  description = <<-EOT
    Kubernetes workloads that get their own Google service account through Workload Identity:
    the Kubernetes service account (namespace/name) they run as and the role they get on each bucket zone.
  EOT
  type = map(object({
    namespace       = string
    service_account = string
    bucket_roles    = map(list(string))
  }))
  default = {
    pipelines = {
      # KFP pipeline-runner: ingest, features, evaluation, registry, deploy steps.
      namespace       = "cityscale"
      service_account = "pipeline-runner"
      bucket_roles = {
        raw             = ["roles/storage.objectAdmin"]
        features        = ["roles/storage.objectAdmin"]
        models          = ["roles/storage.objectAdmin"]
        "pipeline-root" = ["roles/storage.objectAdmin"]
      }
    }
    trainer = {
      # TrainJob pods: read training sets, write checkpoints and weights.
      namespace       = "cityscale"
      service_account = "cityscale-trainer"
      bucket_roles = {
        features        = ["roles/storage.objectViewer"]
        models          = ["roles/storage.objectAdmin"]
        "pipeline-root" = ["roles/storage.objectAdmin"]
      }
    }
    serving = {
      # KServe predictor/transformer: read-only model artifacts and features.
      namespace       = "cityscale"
      service_account = "cityscale-serving"
      bucket_roles = {
        models   = ["roles/storage.objectViewer"]
        features = ["roles/storage.objectViewer"]
      }
    }
    feast = {
      # Feast feature server: registry in the features bucket, push source appends to the raw zone.
      namespace       = "cityscale"
      service_account = "feast-feature-server"
      bucket_roles = {
        features = ["roles/storage.objectViewer"]
        raw      = ["roles/storage.objectCreator", "roles/storage.objectViewer"]
      }
    }
    airbyte = {
      # Airbyte jobs land raw extracts in the raw zone.
      namespace       = "airbyte"
      service_account = "airbyte-admin"
      bucket_roles = {
        raw = ["roles/storage.objectAdmin"]
      }
    }
  }
}
