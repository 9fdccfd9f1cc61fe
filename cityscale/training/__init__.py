"""Training: the one entry point for every mode (``train``), the Kubeflow Trainer launcher (``trainjob``) and
``make train-full`` (``full``), which reuses the pipeline's steps."""
