from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(version: str, registry_uri: str, target: str) -> str:
    """Deploy a registered version: promote it locally, or roll it out as the KServe InferenceService.

    Args:
        version: Registered model version to deploy.
        registry_uri: Model registry root.
        target: "local" promotes the registry alias that the local KServe server serves; "kserve" creates or
            patches the InferenceService (serving/inference_service.py), waits until Ready, rolls back to the
            previous spec on failure and promotes the alias only once the new version is Ready.

    Returns:
        The storage URI of the deployed model.
    """
    from cityscale import steps
    from cityscale.config import Settings

    settings = Settings()
    if target == "local":
        return steps.deploy_local(version, registry_uri, settings)
    if target == "kserve":
        from serving.rollout import deploy_to_kserve

        return deploy_to_kserve(version, registry_uri, settings)
    raise ValueError(f"deploy target {target!r} is not supported; use 'local' or 'kserve'")
