output "repository_id" {
  description = "Repository id."
  value       = google_artifact_registry_repository.docker.repository_id
}

output "repository_name" {
  description = "Full resource name of the repository (for IAM bindings)."
  value       = google_artifact_registry_repository.docker.name
}

output "registry" {
  description = "Image prefix: REGISTRY for `make images` (<location>-docker.pkg.dev/<project>/<repo>)."
  value       = "${var.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.docker.repository_id}"
}
