# syntax=docker/dockerfile:1
# One image for the whole suite: the three gRPC services, the gateway, the migrate job and the
# tools. docker-compose.yml and deploy/kubernetes pick the command per container:
#   python -m services.overview | services.logs | services.export | gateway
#   python -m services load-demo           (the demo data, as the producers' login)
#   python -m aos_cli ...                  (the CLI; `token mint` makes a token)
#   python -m aos_runtime.migrate          (as the admin DATABASE_URL: applies migrations, makes each
#                                           service's role a LOGIN with its AOS_<SERVICE>_DATABASE_URL
#                                           password, exits; the only container given the admin DSN)
#
# No credential is baked in: .dockerignore keeps .env, secrets/, .aos/ and .venv/ out of the
# build context; they come from compose's environment and secrets at run time.
#
#   docker build -t aos-evidence-plane:local .

# The base of both stages. Where no image registry is reachable, tools/offline_images.sh builds
# aos-base:local from Debian's packages: docker build --build-arg PYTHON_IMAGE=aos-base:local .
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: the pinned dependencies and the project, into a venv -------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
# pip's index when it is not pip's default (empty: unset). Builder stage only: the final image
# neither declares nor records them.
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
RUN if [ -z "$PIP_INDEX_URL" ]; then unset PIP_INDEX_URL; fi \
 && if [ -z "$PIP_EXTRA_INDEX_URL" ]; then unset PIP_EXTRA_INDEX_URL; fi \
 && pip install -r requirements.lock

# The project itself (generated protobuf code in gen/ is packaged with it).
COPY pyproject.toml ./
COPY gen/ gen/
COPY aos_runtime/ aos_runtime/
COPY aos_recording/ aos_recording/
COPY aos_evidence/ aos_evidence/
COPY services/ services/
COPY gateway/ gateway/
COPY aos_cli/ aos_cli/
# The import check (from /, so the installed copy answers) fails the build early
# when gen/ has not been generated: run `make protos` first.
RUN pip install --no-deps . \
 && cd / && python -c "import aos_runtime.service_main, aos_evidence.queries, services.overview.server, services.logs.server, services.export.server"

# ---- runtime --------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="aos-evidence-plane" \
      org.opencontainers.image.description="AOS Evidence Plane: Overview, Logs and Export gRPC services"

# A fixed, unprivileged uid/gid (numeric USER below, so runAsNonRoot can verify it).
RUN groupadd --system --gid 10001 aos \
 && useradd --system --uid 10001 --gid aos --home-dir /var/lib/aos --no-create-home \
            --shell /usr/sbin/nologin aos \
 && install -d -o aos -g aos -m 0700 /var/lib/aos

COPY --from=builder /opt/venv /opt/venv

# The app tree, owned by root and read-only for the service user. migrations/ is
# found next to aos_runtime/ (aos_runtime.migrate.MIGRATIONS_DIR), hence /app on
# PYTHONPATH ahead of the copy pip installed into the venv.
WORKDIR /app
COPY pyproject.toml ./
COPY aos_runtime/ aos_runtime/
COPY aos_recording/ aos_recording/
COPY aos_evidence/ aos_evidence/
COPY services/ services/
COPY gateway/ gateway/
COPY aos_cli/ aos_cli/
COPY migrations/ migrations/
COPY tools/grpc_health_probe.py tools/grpc_health_probe.py

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AOS_DATA_DIR=/var/lib/aos \
    AOS_BIND_HOST=0.0.0.0 \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    MALLOC_TRIM_THRESHOLD_=131072

USER 10001:10001

# overview, logs, export, the gateway (AOS_*_PORT defaults)
EXPOSE 50051 50052 50053 8080

# No image-wide HEALTHCHECK: the port differs per service and the migrate job has
# none; compose runs tools/grpc_health_probe.py per service.
CMD ["python", "-m", "services.overview"]
