# Remote state in GCS. The bucket is created once by hand (docs/runbook.md, step 2) and passed at
# init time: terraform init -backend-config="bucket=$TF_STATE_BUCKET" (make infra-plan does this).
terraform {
  backend "gcs" {
    prefix = "cityscale/prod"
  }
}
