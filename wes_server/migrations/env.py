from helixgate.migration_env import run
from wes_server.declaration import SERVICE

run(SERVICE)
