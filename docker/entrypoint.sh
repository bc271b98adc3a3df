#!/bin/sh
# For every NAME_FILE variable, export NAME with the file's content (docker secrets), then exec the command.
# Keeps secrets out of the compose file and out of `docker inspect`.
set -eu
for pair in $(env | grep -E '^[A-Z0-9_]+_FILE=' | cut -d= -f1); do
    name="${pair%_FILE}"
    file="$(printenv "$pair")"
    if [ -r "$file" ]; then
        export "$name=$(cat "$file")"
    fi
done
exec "$@"
