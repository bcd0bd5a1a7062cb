from helixgate.migration_env import run

run("core")
