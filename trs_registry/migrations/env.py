from helixgate.migration_env import run
from trs_registry.declaration import SERVICE

run(SERVICE)
