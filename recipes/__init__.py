"""App recipes (installed as deployer.recipes): defaults and hooks for kinds of apps."""
