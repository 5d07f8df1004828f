#!/usr/bin/env bash
# Builds, from Debian's packages only, the two images docker-compose.yml starts from, for a
# machine whose Docker engine reaches no image registry (but apt reaches Debian's archive):
#
#   aos-base:local      Debian bookworm + python3 (3.11) + venv     -> PYTHON_IMAGE
#   aos-postgres:local  Debian bookworm + postgresql-15 + an entrypoint taking the official
#                       image's POSTGRES_USER/_PASSWORD/_DB/_INITDB_ARGS  -> POSTGRES_IMAGE
#
# Each is one `mmdebstrap` root, piped as a tarball into `docker import`. The archive is the
# one this machine's apt uses (its deb822 sources, given to mmdebstrap on standard input).
# aos-base:local also trusts the extra CAs this machine trusts (/usr/local/share/ca-certificates),
# so that pip inside `docker compose build` reaches the package index the way this machine does.
#
#   tools/offline_images.sh                 # both, skipping an image that already exists
#   tools/offline_images.sh --force         # rebuild both
#   PYTHON_IMAGE=aos-base:local POSTGRES_IMAGE=aos-postgres:local docker-compose up --build
#
# Needs root (or mmdebstrap's unshare mode), mmdebstrap and a running Docker engine
# (Debian: apt-get install mmdebstrap docker.io docker-compose).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE="${OFFLINE_DEBIAN_SUITE:-bookworm}"
BASE_IMAGE=aos-base:local
POSTGRES_IMAGE=aos-postgres:local
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

command -v mmdebstrap > /dev/null || { echo "offline_images: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 2; }
docker info > /dev/null 2>&1 || { echo "offline_images: no Docker engine answers \`docker info\` (start dockerd)" >&2; exit 2; }

# This machine's apt sources (deb822), else mmdebstrap's default archive.
sources() {
    if [ -n "${OFFLINE_DEBIAN_SOURCES:-}" ]; then cat "$OFFLINE_DEBIAN_SOURCES"
    elif [ -s /etc/apt/sources.list.d/debian.sources ]; then cat /etc/apt/sources.list.d/debian.sources
    elif [ -s /etc/apt/sources.list ]; then cat /etc/apt/sources.list
    else : ; fi
}

have() { [ "$FORCE" = 0 ] && docker image inspect "$1" > /dev/null 2>&1; }

SLIM=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
      --dpkgopt='path-include=/usr/share/locale/locale.alias')
ENVS=(--change 'ENV LANG=C.UTF-8')

if have "$BASE_IMAGE"; then
    echo "offline_images: $BASE_IMAGE exists (--force to rebuild)"
else
    echo "offline_images: building $BASE_IMAGE from Debian $SUITE (python3, venv) ..."
    sources | mmdebstrap --quiet --variant=minbase --format=tar "${SLIM[@]}" \
        --include=python3,python3-venv,python-is-python3,ca-certificates \
        --customize-hook='if ls /usr/local/share/ca-certificates/*.crt > /dev/null 2>&1; then cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/"; chroot "$1" update-ca-certificates > /dev/null; fi' \
        "$SUITE" - \
      | docker import "${ENVS[@]}" \
          --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
          --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
          --change 'CMD ["python3"]' \
          --message "Debian $SUITE + python3 (tools/offline_images.sh)" - "$BASE_IMAGE"
fi

if have "$POSTGRES_IMAGE"; then
    echo "offline_images: $POSTGRES_IMAGE exists (--force to rebuild)"
else
    echo "offline_images: building $POSTGRES_IMAGE from Debian $SUITE (postgresql-15) ..."
    sources | mmdebstrap --quiet --variant=minbase --format=tar "${SLIM[@]}" \
        --include=postgresql-15 \
        --customize-hook="upload $HERE/offline-images/postgres-entrypoint.sh /usr/local/bin/aos-postgres-entrypoint" \
        --customize-hook='chmod 0755 "$1/usr/local/bin/aos-postgres-entrypoint"; rm -rf "$1/var/lib/postgresql/15" "$1/etc/postgresql/15"; install -d -m 0700 "$1/var/lib/postgresql/data"; chroot "$1" chown postgres:postgres /var/lib/postgresql/data' \
        "$SUITE" - \
      | docker import "${ENVS[@]}" \
          --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
          --change 'ENV PGDATA=/var/lib/postgresql/data' \
          --change 'EXPOSE 5432' \
          --change 'ENTRYPOINT ["/usr/local/bin/aos-postgres-entrypoint"]' \
          --message "Debian $SUITE + postgresql-15 (tools/offline_images.sh)" - "$POSTGRES_IMAGE"
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^(${BASE_IMAGE}|${POSTGRES_IMAGE}) " || true
