# Docker repository for the pipeline image (cityscale:<git sha>), the serving image (cityscale-serving:<git sha>)
# and the opt-in Tecton image.
# Tags are immutable: a git SHA always names the same bytes, which is what makes rollbacks safe.

resource "google_artifact_registry_repository" "docker" {
  # checkov:skip=CKV_GCP_84: Images hold no personal or secret data (public CC BY 4.0 datasets, open code); Google-managed encryption at rest is sufficient and avoids a KMS key per environment.
  project       = var.project_id
  location      = var.location
  repository_id = var.repository_id
  description   = "CityScale container images, tagged by git SHA"
  format        = "DOCKER"
  labels        = var.labels

  docker_config {
    immutable_tags = true
  }

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.keep_recent_versions
    }
  }

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = var.untagged_retention
    }
  }
}
