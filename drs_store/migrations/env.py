from helixgate.migration_env import run
from drs_store.declaration import SERVICE

run(SERVICE)
