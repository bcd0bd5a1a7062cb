from helixgate.migration_env import run
from helixgate.declaration import SERVICE

run(SERVICE)
