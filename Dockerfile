# syntax=docker/dockerfile:1
# One image for every chamberlain function; CHAMBERLAIN_FUNCTION (set by each Knative Service)
# picks the function docker/entrypoint.sh serves with gunicorn.
#
#   docker build -t chamberlain:0.1.0 .
#   docker run -e CHAMBERLAIN_FUNCTION=dead-letter -p 8080:8080 chamberlain:0.1.0

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: resolve and install chamberlain and its dependencies into a virtualenv ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/chamberlain
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY events ./events
COPY knative ./knative
# Every dependency ships manylinux wheels; build tools live (if ever needed) in this stage only.
RUN /opt/chamberlain/bin/pip install --upgrade pip \
 && /opt/chamberlain/bin/pip install . \
 && /opt/chamberlain/bin/pip uninstall --yes pip \
 && /opt/chamberlain/bin/python -m compileall -q /opt/chamberlain

# --- runtime: the virtualenv, git (intent is read at a commit), a non-root user ---------------
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install --yes --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 chamberlain \
 && useradd --system --uid 10001 --gid chamberlain --home-dir /nonexistent \
      --no-create-home --shell /usr/sbin/nologin chamberlain
COPY --from=build /opt/chamberlain /opt/chamberlain
COPY docker/entrypoint.sh /usr/local/bin/chamberlain-entrypoint
ENV PATH=/opt/chamberlain/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8080 \
    CHAMBERLAIN_CACHE_DIR=/tmp/chamberlain-cache
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chamberlain-entrypoint"]
