#!/bin/sh
# `docker compose` for docker-compose.yml, after checking that it is Compose v2.21 or newer
# (the file uses the top-level `name:` and an interpolated GPU count, which older versions and
# the Python docker-compose v1 reject or misread). Usage: scripts/compose.sh up -d
set -eu
MIN_MAJOR=2
MIN_MINOR=21
here=$(cd "$(dirname "$0")/.." && pwd)
if ! version=$(docker compose version --short 2>/dev/null); then
    echo "compose.sh: \`docker compose\` (Compose v2) is not installed; docker-compose.yml needs Compose v$MIN_MAJOR.$MIN_MINOR or newer" >&2
    exit 2
fi
version=${version#v}
major=${version%%.*}
rest=${version#*.}
minor=${rest%%.*}
case "$major$minor" in
    *[!0-9]*|"") echo "compose.sh: cannot read the Compose version from '$version'" >&2; exit 2 ;;
esac
if [ "$major" -lt "$MIN_MAJOR" ] || { [ "$major" -eq "$MIN_MAJOR" ] && [ "$minor" -lt "$MIN_MINOR" ]; }; then
    echo "compose.sh: Docker Compose $version is too old: docker-compose.yml needs v$MIN_MAJOR.$MIN_MINOR or newer" >&2
    exit 2
fi
exec docker compose -f "$here/docker-compose.yml" "$@"
