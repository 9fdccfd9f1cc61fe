"""Pipeline definitions, their compiler entry point and the local (kfp.local) runner."""
