output "names" {
  description = "Bucket names by zone: raw, features, models, pipeline-root."
  value       = { for zone, bucket in google_storage_bucket.zone : zone => bucket.name }
}

output "urls" {
  description = "gs:// URLs by zone."
  value       = { for zone, bucket in google_storage_bucket.zone : zone => bucket.url }
}

output "access_logs_bucket" {
  description = "Bucket that receives the access logs."
  value       = google_storage_bucket.access_logs.name
}
