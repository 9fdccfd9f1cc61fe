# CityScale's storage zones. All buckets: uniform bucket-level access, public access prevention,
# object versioning, access logs, and lifecycle rules that fit what each zone holds.

locals {
  zones = {
    raw = {
      # Partitioned Parquet counts: cold after a quarter, never deleted (training history).
      storage_class_transitions = [{ age = var.raw_nearline_after_days, storage_class = "NEARLINE" }]
      delete_after_days         = null
      newer_versions_kept       = null
    }
    features = {
      storage_class_transitions = []
      delete_after_days         = var.features_retention_days
      newer_versions_kept       = null
    }
    models = {
      storage_class_transitions = []
      delete_after_days         = null
      newer_versions_kept       = var.model_versions_kept
    }
    pipeline-root = {
      storage_class_transitions = []
      delete_after_days         = var.pipeline_root_retention_days
      newer_versions_kept       = null
    }
  }
}

resource "google_storage_bucket" "access_logs" {
  # checkov:skip=CKV_GCP_62: This bucket is the access-log sink of the other buckets; logging it into itself would loop.
  project                     = var.project_id
  name                        = "${var.prefix}-access-logs"
  location                    = var.location
  force_destroy               = var.force_destroy
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = merge(var.labels, { zone = "access-logs" })

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = 365
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket" "zone" {
  for_each = local.zones

  project                     = var.project_id
  name                        = "${var.prefix}-${each.key}"
  location                    = var.location
  force_destroy               = var.force_destroy
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = merge(var.labels, { zone = each.key })

  versioning {
    enabled = true
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = each.key
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.storage_class_transitions
    content {
      condition {
        age                   = lifecycle_rule.value.age
        matches_storage_class = ["STANDARD"]
      }
      action {
        type          = "SetStorageClass"
        storage_class = lifecycle_rule.value.storage_class
      }
    }
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.delete_after_days == null ? [] : [each.value.delete_after_days]
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.newer_versions_kept == null ? [] : [each.value.newer_versions_kept]
    content {
      condition {
        num_newer_versions = lifecycle_rule.value
        with_state         = "ARCHIVED"
      }
      action {
        type = "Delete"
      }
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }
}
