# Autoscaling GPU node pool (0..N per zone) for Kubeflow Trainer TrainJobs and GPU predictors.
# Nodes are tainted so only Pods that request GPUs (and therefore receive GKE's automatic
# nvidia.com/gpu toleration) or explicitly tolerate the taint land on them. GKE installs the NVIDIA
# driver (gpu_driver_installation_config) and runs the NVIDIA device plugin itself.

resource "google_container_node_pool" "gpu" {
  project        = var.project_id
  name           = var.name
  location       = var.region
  cluster        = var.cluster_name
  node_locations = var.node_locations

  initial_node_count = var.min_nodes

  autoscaling {
    min_node_count  = var.min_nodes
    max_node_count  = var.max_nodes
    location_policy = "ANY"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.machine_type
    disk_size_gb    = var.disk_size_gb
    disk_type       = "pd-balanced"
    image_type      = "COS_CONTAINERD"
    spot            = var.spot
    service_account = var.node_service_account
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    guest_accelerator {
      type  = var.accelerator_type
      count = var.accelerator_count

      gpu_driver_installation_config {
        gpu_driver_version = var.gpu_driver_version
      }
    }

    labels = {
      "cityscale.io/pool" = "gpu"
    }

    taint {
      key    = var.taint_key
      value  = "present"
      effect = "NO_SCHEDULE"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    metadata = {
      disable-legacy-endpoints = "true"
    }
  }

  lifecycle {
    # The cluster autoscaler owns the current size.
    ignore_changes = [initial_node_count]
  }
}
