from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(version: str, registry_uri: str, target: str) -> str:
    """Promote a registered version to production.

    Args:
        version: Registered model version to deploy.
        registry_uri: Model registry root.
        target: "local" promotes the registry alias that the local KServe server serves.

    Returns:
        The storage URI of the deployed model.
    """
    from cityscale import steps
    from cityscale.config import Settings

    if target != "local":
        raise ValueError(f"deploy target {target!r} is not supported; use 'local'")
    return steps.deploy_local(version, registry_uri, Settings().model_name)
