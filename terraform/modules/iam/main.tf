# Least-privilege identities. Nodes get only the logging/monitoring roles GKE needs plus pull access
# to the one Artifact Registry repository. Each workload gets its own Google service account, bound to
# exactly one Kubernetes service account through Workload Identity, with bucket-level (not project-level)
# storage roles.

locals {
  node_roles = [
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/autoscaling.metricsWriter",
  ]

  bucket_bindings = merge([
    for workload, spec in var.workloads : merge([
      for zone, roles in spec.bucket_roles : {
        for role in roles : "${workload}/${zone}/${role}" => {
          workload = workload
          bucket   = var.bucket_names[zone]
          role     = role
        }
      }
    ]...)
  ]...)
}

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name}-nodes"
  display_name = "CityScale GKE nodes (${var.name})"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset(local.node_roles)

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_artifact_registry_repository_iam_member" "nodes_pull" {
  project    = var.project_id
  location   = var.registry_location
  repository = var.registry_repository_id
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_service_account" "workload" {
  for_each = var.workloads

  project      = var.project_id
  account_id   = "${var.name}-${each.key}"
  display_name = "CityScale ${each.key} (${each.value.namespace}/${each.value.service_account})"
}

resource "google_service_account_iam_member" "workload_identity" {
  for_each = var.workloads

  service_account_id = google_service_account.workload[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${each.value.namespace}/${each.value.service_account}]"
}

resource "google_storage_bucket_iam_member" "workload" {
  for_each = local.bucket_bindings

  bucket = each.value.bucket
  role   = each.value.role
  member = "serviceAccount:${google_service_account.workload[each.value.workload].email}"
}
